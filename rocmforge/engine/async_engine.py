"""AsyncEngine: LLMEngine.step() in ONE background thread; requests and outputs cross over by queues.

    event loop (HTTP handlers)                   engine thread (owns the model: not thread-safe)
    -------------------------------------        ------------------------------------------------
    h = engine.submit(ids, params)       ---->   commands (queue.Queue) -> LLMEngine.add_request
    async for upd in h: ...              <----   loop.call_soon_threadsafe(h.queue.put_nowait, upd)
    h.cancel()   (client went away)      ---->   commands -> LLMEngine.abort: KV blocks freed now

Every step runs all live requests together (continuous batching): a request submitted while others
decode joins the next step. After each step the thread reads every request's new text with
`LLMEngine.delta` (never a split UTF-8 character, never a piece of a possible stop string) and its
new tokens, and pushes one `Update`. Timings (TTFT, inter-token latency) are taken in the engine
thread, when the tokens exist, and reported to an optional observer (the server's metrics).

Per-request logits processors (structured output) are applied by wrapping the engine's sampler:
processor(output_ids, logits (V,)) -> logits (V,), called for every sample of the request.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from ..sampling_params import SamplingParams
from .llm_engine import LLMEngine
from .outputs import RequestOutput

logger = logging.getLogger("rocmforge.engine")

LogitsProcessor = Callable[[list[int], "object"], "object"]  # (output_ids, logits (V,)) -> logits (V,)


class QueueFullError(RuntimeError):
    """More requests in flight than the engine accepts (`max_pending`)."""


@dataclass(frozen=True)
class SampleDelta:
    """What one sample produced since the previous Update."""

    index: int  # which of the request's n samples
    text: str  # new visible text (may be "" while text is held back)
    token_ids: list[int]  # new token ids
    logprobs: list[dict[int, float]] | None  # one dict per new token, when asked
    finish_reason: str | None  # set once, on the sample's last delta


@dataclass(frozen=True)
class Update:
    samples: list[SampleDelta]  # only samples with something new
    finished: bool = False  # the last Update of the request
    output: RequestOutput | None = None  # the whole output, on the last Update
    error: str | None = None  # the request could not run (message for people)


@dataclass(frozen=True)
class EngineStats:
    """A snapshot taken by the engine thread after each step (read from any thread)."""

    running: int = 0  # requests with a sequence in the running batch
    waiting: int = 0  # requests submitted but not running (queued or preempted)
    kv_usage: float = 0.0  # fraction of KV blocks in use, 0..1
    max_running: int = 0  # the most requests seen running in one step since start
    steps: int = 0  # engine steps run since start


class RequestHandle:
    """One submitted request: iterate it (async) for Updates; cancel() aborts it in the engine."""

    def __init__(self, owner: AsyncEngine, prompt_ids: list[int], params: SamplingParams,
                 prompt: str | None, processor: LogitsProcessor | None, tag: str):  # fmt: skip
        self.owner, self.prompt_ids, self.params, self.prompt = owner, prompt_ids, params, prompt
        self.processor, self.tag = processor, tag
        self.queue: asyncio.Queue[Update] = asyncio.Queue()
        self.loop = asyncio.get_running_loop()
        self.rid: str | None = None  # the LLMEngine's id, set by the engine thread
        self.arrival = time.monotonic()
        self.first_token: float | None = None  # monotonic time of the first generated token
        self.last_token: float | None = None
        self.sent = [0] * params.n  # tokens handed out, per sample
        self.num_output_tokens = 0
        self.done = False  # set by the consumer after the last Update, or on cancel

    def __aiter__(self):
        return self

    async def __anext__(self) -> Update:
        if self.done:
            raise StopAsyncIteration
        upd = await self.queue.get()
        if upd.finished:
            self.done = True
        return upd

    def cancel(self) -> None:
        """Abort the request (a no-op once it finished): frees its KV blocks at the next command drain."""
        if not self.done:
            self.done = True
            self.owner._commands.put(("abort", self))

    def push(self, upd: Update) -> None:  # engine thread
        self.loop.call_soon_threadsafe(self.queue.put_nowait, upd)


class _ProcessorSampler:
    """Wraps the engine's sampler: applies each request's logits processor before the draw.

    NOTE: rows are matched to requests by the identity of their SamplingParams (one object per
    request, kept alive here while registered); logprobs are then of the processed logits.
    """

    def __init__(self, inner):
        self.inner = inner
        self.processors: dict[int, tuple[SamplingParams, LogitsProcessor]] = {}

    def __call__(self, logits, rows):  # logits (S, V)
        return self.draw(logits, rows).result()

    def draw(self, logits, rows):  # logits (S, V) -> sampler.Draw
        if self.processors:
            hits = [(i, self.processors.get(id(r.params))) for i, r in enumerate(rows)]
            hits = [(i, p) for i, p in hits if p is not None]
            if hits:
                logits = logits.detach().float().cpu().clone()  # (S, V)
                for i, (_, proc) in hits:
                    logits[i] = proc(rows[i].output_ids, logits[i])
        return self.inner.draw(logits, rows)

    def __getattr__(self, name):  # default_generator etc.
        return getattr(self.inner, name)


class AsyncEngine:
    """Owns an LLMEngine and the one thread that steps it."""

    def __init__(self, engine: LLMEngine, *, observer=None, max_pending: int = 512):
        self.engine, self.observer, self.max_pending = engine, observer, max_pending
        self._sampler = _ProcessorSampler(engine.sampler)
        engine.sampler = self._sampler
        self._commands: queue.Queue = queue.Queue()
        self._live: dict[str, RequestHandle] = {}
        self._inflight = 0  # submitted and not yet finished/aborted (guarded by _lock)
        self._lock = threading.Lock()
        self.stats = EngineStats()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="rocmforge-engine", daemon=True)
        self._thread.start()

    # ---- any thread / event loop ---------------------------------------------------------------
    def submit(self, prompt_ids: list[int], params: SamplingParams, *, prompt: str | None = None,
               processor: LogitsProcessor | None = None, tag: str = "") -> RequestHandle:  # fmt: skip
        """Queue a request (call from the event loop). Raises QueueFullError past max_pending."""
        with self._lock:
            if self._inflight >= self.max_pending:
                raise QueueFullError(f"{self._inflight} requests are in flight (the limit is "
                                     f"{self.max_pending}); retry later")  # fmt: skip
            self._inflight += 1
        h = RequestHandle(self, list(prompt_ids), params, prompt, processor, tag)
        self._commands.put(("add", h))
        return h

    def run_in_engine(self, fn: Callable[[], object]) -> concurrent.futures.Future:
        """Run fn() in the engine thread between two steps (e.g. LLM.generate for a reference)."""
        fut: concurrent.futures.Future = concurrent.futures.Future()
        self._commands.put(("call", fn, fut))
        return fut

    @property
    def num_inflight(self) -> int:
        return self._inflight

    def shutdown(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._commands.put(("stop",))
        self._thread.join(timeout)

    # ---- the engine thread ---------------------------------------------------------------------
    def _loop(self) -> None:
        while not self._stop.is_set():
            self._drain(block=not self.engine.has_unfinished())
            if self._stop.is_set():
                break
            stepped = self.engine.has_unfinished()
            if stepped:
                try:
                    self.engine.step()
                except Exception as e:  # the model failed: fail every live request, keep serving
                    logger.exception("engine step failed")
                    for h in list(self._live.values()):
                        self._close(h, Update([], True, error=f"the engine failed: {type(e).__name__}: {e}"))
                else:
                    self._publish()
            self._snapshot(stepped)

    def _drain(self, block: bool) -> None:
        try:
            cmd = self._commands.get(timeout=0.5) if block else self._commands.get_nowait()
        except queue.Empty:
            return
        while True:
            self._run_command(cmd)
            try:
                cmd = self._commands.get_nowait()
            except queue.Empty:
                return

    def _run_command(self, cmd: tuple) -> None:
        kind = cmd[0]
        if kind == "add":
            h: RequestHandle = cmd[1]
            if h.done:  # cancelled before it reached the engine
                self._release()
                return
            if h.processor is not None:
                self._sampler.processors[id(h.params)] = (h.params, h.processor)
            try:
                h.rid = self.engine.add_request(h.prompt_ids, h.params, prompt=h.prompt)
            except ValueError as e:
                self._sampler.processors.pop(id(h.params), None)
                self._release()
                h.push(Update([], True, error=str(e)))
                return
            self._live[h.rid] = h
            if self.observer is not None:
                self.observer.on_added(len(h.prompt_ids))
        elif kind == "abort":
            h = cmd[1]
            if h.rid is not None and h.rid in self._live:
                self.engine.abort(h.rid)
                self._close(h, Update([], True, error="aborted"), reason="abort", forget=False)
        elif kind == "call" and cmd[2].set_running_or_notify_cancel():
            try:
                cmd[2].set_result(cmd[1]())
            except BaseException as e:  # handed to the caller
                cmd[2].set_exception(e)

    def _release(self) -> None:
        with self._lock:
            self._inflight -= 1

    def _close(self, h: RequestHandle, upd: Update, reason: str | None = None, forget: bool = True) -> None:
        """Finish a live request: last Update, forget it in the engine, metrics and the log line."""
        self._live.pop(h.rid, None)
        self._sampler.processors.pop(id(h.params), None)
        if forget:
            self.engine.abort(h.rid)  # a finished request: drop its state (its blocks are already free)
        self._release()
        h.push(upd)
        now = time.monotonic()
        if reason is None:
            reason = ",".join(str(o.finish_reason) for o in upd.output.outputs) if upd.output else "error"
        ttft = (h.first_token - h.arrival) if h.first_token is not None else None
        gen_s = (now - h.first_token) if h.first_token is not None else 0.0
        tps = (h.num_output_tokens - 1) / gen_s if gen_s > 0 and h.num_output_tokens > 1 else 0.0
        logger.info("request %s: %d prompt + %d output tokens, TTFT %s, %.1f tok/s, %.3f s, finish=%s",
                    h.tag or h.rid, len(h.prompt_ids), h.num_output_tokens,
                    "-" if ttft is None else f"{ttft:.3f} s", tps, now - h.arrival, reason)  # fmt: skip
        if self.observer is not None:
            self.observer.on_finished(reason=reason, e2e_s=now - h.arrival)

    def _publish(self) -> None:
        now = time.monotonic()
        for rid, h in list(self._live.items()):
            out = self.engine.output(rid)
            deltas, new_tokens = [], 0
            for o in out.outputs:
                i = o.index
                text = self.engine.delta(rid, i)
                toks = o.token_ids[h.sent[i] :]
                lps = o.logprobs[h.sent[i] :] if o.logprobs is not None else None
                h.sent[i] = len(o.token_ids)
                new_tokens += len(toks)
                if text or toks or o.finish_reason is not None:
                    deltas.append(SampleDelta(i, text, toks, lps, o.finish_reason))
            self._time_tokens(h, new_tokens, now)
            if out.finished:
                self._close(h, Update(deltas, True, output=out))
            elif deltas:
                h.push(Update(deltas))

    def _time_tokens(self, h: RequestHandle, n: int, now: float) -> None:
        if n == 0:
            return
        h.num_output_tokens += n
        if self.observer is not None:
            if h.first_token is None:
                self.observer.on_first_token(now - h.arrival)
            else:
                self.observer.on_inter_token(now - h.last_token)
            self.observer.on_generated(n)
        h.first_token = h.first_token or now
        h.last_token = now

    def _snapshot(self, stepped: bool) -> None:
        sch = self.engine.scheduler
        running_ids = {s.request_id for s in sch.running}
        running = sum(1 for rid in self._live if rid in running_ids)
        waiting = max(0, self._inflight - running)
        stats = EngineStats(running=running, waiting=waiting, kv_usage=sch.block_manager.usage,
                            max_running=max(self.stats.max_running, running),
                            steps=self.stats.steps + int(stepped))  # fmt: skip
        self.stats = stats
        if self.observer is not None:
            self.observer.on_stats(stats)
