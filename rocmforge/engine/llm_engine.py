"""The generation loop: requests in, tokens and text out, over the scheduler and the paged KV cache.

One step (STYLE rule 7):

    plan = scheduler.schedule()           # which sequences run, which tokens, which blocks
    logits = self._execute(plan)          # one flat forward over every scheduled token
    out = sample(logits)                  # n draws on a request's first sample (it forks), else 1
    scheduler.update(plan, out)           # append tokens; EOS / stop ids / max_tokens / context end
    detokenize + stop strings             # a stop string found -> scheduler.stop_sequence

Decode ahead (CUDA graphs): after a decode step's draws are enqueued on the device, and before the
host reads them, the engine replays the graph of the step after it with those ids as input
(`DecodeGraphs.launch_ahead`), so the host's update / detokenize / schedule runs while the GPU
computes. The next step uses those logits if its plan is the one guessed (the same sequences, each
one position on, no new block, no copy-on-write), else it drops them and runs its own forward: the
dropped step only wrote K/V that a sequence's own next token puts in its own block (or a finished
sequence's), which nothing reads before it is written again. It is tried only when nothing waits to
be admitted and no sequence ends at its max_tokens or needs a new block.

Prefill and decode are the same path: a prefill entry runs the prompt (or a chunk of it), a decode
entry one token; several sequences share each forward. Prompt logprobs come from one separate
forward over the whole prompt into a scratch cache (logits at every position), so they are exact
whatever the scheduler reuses from its prefix cache.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch

from ..attention.metadata import build_metadata
from ..cache.kv_cache import allocate_kv_cache
from ..config import ModelConfig
from ..sampling_params import SamplingParams
from .cuda_graph import DecodeGraphs
from .outputs import CompletionOutput, IncrementalText, RequestOutput
from .plan import SchedulePlan, StepOutput
from .sampler import Sampler, SamplingRow, seeded_generator, top_logprobs
from .scheduler import Scheduler, SchedulerConfig


@dataclass(frozen=True)
class EngineConfig:
    max_model_len: int  # prompt + output tokens at most
    block_size: int = 16  # token slots per KV block
    kv_cache_tokens: int = 16384  # KV cache capacity in tokens (at least max_model_len)
    max_num_seqs: int = 64  # sequences decoding together
    max_num_batched_tokens: int = 2048  # tokens in one forward (longer prompts are prefilled in chunks)
    enable_prefix_caching: bool = True
    kv_cache_dtype: torch.dtype | None = None  # None: the model's dtype (cache/kv_cache.resolve_kv_dtype)
    cuda_graphs: bool = True  # graph-captured decode on a GPU (engine/cuda_graph.py); False: always eager
    decode_ahead: bool = True  # with graphs: launch the next decode step before reading this one's ids
    # batch-invariant mode (vLLM's VLLM_BATCH_INVARIANT): a request's tokens do not depend on what
    # else runs. Steps are one prefill or only decodes (SchedulerConfig.prefill_alone), no prefix
    # cache; graphed decode captures only max_num_seqs rows (every step the same shapes), eager
    # decode runs each row as a batch of one.
    batch_invariant: bool = False


@dataclass
class _Ahead:
    """A decode step launched before the host read the ids it runs on (see the module docstring)."""

    seq_ids: tuple[int, ...]
    positions: tuple[int, ...]
    blocks: tuple[int, ...]  # the block of each position
    logits: torch.Tensor  # (B, V): the graph's output buffer
    tokens: tuple[int, ...] = ()  # the ids it ran on, once the host has read them

    def matches(self, plan: SchedulePlan, block_size: int) -> bool:
        if plan.block_copies or len(plan.seqs) != len(self.seq_ids):
            return False
        return all(
            e.sample and e.num_samples == 1 and e.token_ids == (t,) and e.seq_id == s and e.start_pos == p
            and e.block_table[p // block_size] == blk
            for e, s, p, blk, t in zip(plan.seqs, self.seq_ids, self.positions, self.blocks, self.tokens)
        )  # fmt: skip


@dataclass
class _Sample:
    """One of a request's n samples, as the engine sees it."""

    index: int
    text: IncrementalText
    decoder: object  # the tokenizer's stream decoder: push(id) -> str, flush() -> str
    generator: torch.Generator | None
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[dict[int, float]] = field(default_factory=list)
    finish_reason: str | None = None
    stop_reason: int | str | None = None


@dataclass
class _Request:
    request_id: str
    prompt: str | None
    prompt_ids: list[int]
    params: SamplingParams
    samples: list[_Sample]
    prompt_logprobs: list[dict[int, float] | None] | None = None

    @property
    def finished(self) -> bool:
        return all(s.finish_reason is not None for s in self.samples)


class LLMEngine:
    """Runs requests to completion on one model; `LLM` (rocmforge/llm.py) is the friendly front."""

    def __init__(self, model, tokenizer, model_config: ModelConfig, config: EngineConfig, *,
                 device: torch.device, dtype: torch.dtype, seed: int | None = None):
        self.model, self.tokenizer, self.model_config, self.config = model, tokenizer, model_config, config
        self.device, self.dtype = torch.device(device), dtype
        bs = config.block_size
        num_blocks = -(-max(config.kv_cache_tokens, config.max_model_len) // bs)
        self.scheduler = Scheduler(SchedulerConfig(
            max_num_seqs=config.max_num_seqs,
            max_num_batched_tokens=max(config.max_num_batched_tokens, config.max_num_seqs),
            block_size=bs,
            num_blocks=num_blocks,
            max_model_len=config.max_model_len,
            enable_prefix_caching=config.enable_prefix_caching and not config.batch_invariant,
            prefill_alone=config.batch_invariant,
        ))  # fmt: skip
        self.kv_caches = self._allocate(num_blocks)
        self.graphs = None
        if config.cuda_graphs and self.device.type == "cuda":
            self.graphs = DecodeGraphs(model, self.kv_caches, max_num_seqs=config.max_num_seqs,
                                       max_model_len=config.max_model_len, block_size=bs,
                                       device=self.device, one_bucket=config.batch_invariant)  # fmt: skip
        self.sampler = Sampler(seed)
        self.sampler.by_row = config.batch_invariant
        self._ahead: _Ahead | None = None  # the decode step launched ahead, if any
        self.ran_graph = False  # the last step ran a decode graph (or its launched-ahead replay)
        self.ahead_used = self.ahead_dropped = 0  # decode-ahead steps taken / thrown away
        self.eog_ids = frozenset(int(t) for t in tokenizer.eog_ids)
        self._requests: dict[str, _Request] = {}
        self._seq_of: dict[tuple[str, int], int] = {}  # (request_id, sample index) -> live seq_id
        self._ids = itertools.count()

    def _allocate(self, num_blocks: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        # NOTE: zeros are lazily backed on CPU: untouched cache pages cost no memory.
        return allocate_kv_cache(self.model_config, num_blocks, self.config.block_size,
                                 device=self.device, dtype=self.config.kv_cache_dtype or self.dtype)

    def capture_graphs(self) -> list[int]:
        """Capture every decode batch bucket now (DecodeGraphs.capture_all); [] without graphs."""
        return [] if self.graphs is None else self.graphs.capture_all()

    # ---- requests -----------------------------------------------------------------------------
    def check_prompt(self, prompt_ids: list[int]) -> None:
        n, limit = len(prompt_ids), self.config.max_model_len
        if n == 0:
            raise ValueError("the prompt is empty (0 tokens); give at least one token")
        if n > limit:
            raise ValueError(
                f"the prompt has {n} tokens but the context holds {limit} (max_model_len); "
                f"shorten the prompt, or raise max_model_len if the model's context allows it"
            )
        V = self.model_config.vocab_size
        bad = [t for t in prompt_ids if not 0 <= t < V]
        if bad:
            raise ValueError(f"prompt token id {bad[0]} is outside the vocabulary (size {V})")

    def add_request(self, prompt_ids: list[int], params: SamplingParams, *, prompt: str | None = None) -> str:
        """Queue one request; returns its id. Raises ValueError on a prompt that cannot run."""
        prompt_ids = [int(t) for t in prompt_ids]
        self.check_prompt(prompt_ids)
        params.check_vocab(self.model_config.vocab_size)
        if params.n > self.config.max_num_seqs:
            raise ValueError(f"SamplingParams.n={params.n} exceeds max_num_seqs ({self.config.max_num_seqs})")
        rid = str(next(self._ids))
        samples = [
            _Sample(
                index=i,
                text=IncrementalText(params.stop_strings, params.include_stop_str_in_output),
                decoder=self._stream_decoder(params),
                generator=None if params.seed is None else seeded_generator(params.seed, i),
            )
            for i in range(params.n)
        ]
        req = _Request(rid, prompt, prompt_ids, params, samples)
        if params.prompt_logprobs is not None:
            req.prompt_logprobs = self._prompt_logprobs(prompt_ids, params.prompt_logprobs)
        seq = self.scheduler.add_request(rid, prompt_ids, params, eos_token_ids=self.eog_ids)
        self._requests[rid] = req
        self._seq_of[(rid, 0)] = seq.seq_id
        return rid

    def _stream_decoder(self, params: SamplingParams):
        try:
            return self.tokenizer.stream_decoder(skip_special=params.skip_special_tokens)
        except TypeError:  # a tokenizer whose decoder takes no options
            return self.tokenizer.stream_decoder()

    def has_unfinished(self) -> bool:
        return any(not r.finished for r in self._requests.values())

    def output(self, rid: str) -> RequestOutput:
        req = self._requests[rid]
        want_lp = req.params.logprobs is not None
        outs = [
            CompletionOutput(
                index=s.index,
                text=s.text.text,
                token_ids=list(s.token_ids),
                finish_reason=s.finish_reason,
                stop_reason=s.stop_reason,
                logprobs=list(s.logprobs) if want_lp else None,
                cumulative_logprob=sum(lp[t] for lp, t in zip(s.logprobs, s.token_ids)) if want_lp else None,
            )
            for s in req.samples
        ]
        return RequestOutput(rid, req.prompt, list(req.prompt_ids), outs, req.prompt_logprobs, req.finished)

    def num_generated(self, rid: str, index: int = 0) -> int:
        """Tokens sample `index` of a request has so far (cheap: no output objects built)."""
        return len(self._requests[rid].samples[index].token_ids)

    def abort(self, rid: str) -> None:
        """Forget a request: stop its unfinished samples and free their blocks (a no-op if gone)."""
        if self._requests.pop(rid, None) is not None:
            self.scheduler.abort(rid)
            self._seq_of = {k: v for k, v in self._seq_of.items() if k[0] != rid}

    def delta(self, rid: str, index: int = 0) -> str:
        """Streamable new text of one sample since the last call (all of it once finished)."""
        s = self._requests[rid].samples[index]
        return s.text.delta(final=s.finish_reason is not None)

    def run(self, rids: list[str]) -> Iterator[None]:
        """Step until every request in `rids` has finished; yields after each step."""
        while not all(self._requests[r].finished for r in rids):
            self.step()
            yield

    # ---- one step -----------------------------------------------------------------------------
    def step(self) -> None:
        plan = self.scheduler.schedule()
        if plan.is_empty:
            raise RuntimeError("the scheduler had nothing to run although requests are pending")
        logits = self._execute(plan)  # (num sampled entries, V)
        rows, owners, row_of = [], [], []
        for r, e in enumerate(x for x in plan.seqs if x.sample):
            seq = self.scheduler.get_sequence(e.seq_id)
            req = self._requests[seq.request_id]
            for k in range(e.num_samples):
                smp = req.samples[seq.sample_index + k]
                rows.append(SamplingRow(req.params, req.prompt_ids, smp.token_ids, smp.generator,
                                        self._banned(req.params, len(smp.token_ids))))
                owners.append((e.seq_id, req, smp))
                row_of.append(r)
        identity = len(row_of) == logits.shape[0] and all(i == r for i, r in enumerate(row_of))
        # NOTE: no (S, V) copy when rows and logits are 1:1
        draw = self.sampler.draw(logits if identity else logits[row_of], rows)
        if self.ran_graph and identity and draw.tokens is not None:
            self._launch_ahead(plan, owners, draw.tokens)
        res = draw.result()
        if self._ahead is not None:
            self._ahead.tokens = tuple(res.token_ids)
        drawn: dict[int, list[int]] = {}
        for (sid, _, _), tok in zip(owners, res.token_ids):
            drawn.setdefault(sid, []).append(tok)
        finished = self.scheduler.update(plan, StepOutput({k: tuple(v) for k, v in drawn.items()}))
        done = {(s.request_id, s.sample_index): s for s in finished}
        for s in self.scheduler.running:  # forks born in this update
            self._seq_of.setdefault((s.request_id, s.sample_index), s.seq_id)
        for (_, req, smp), tok, lp in zip(owners, res.token_ids, res.logprobs):
            self._advance(req, smp, tok, lp, done.get((req.request_id, smp.index)))

    def _launch_ahead(self, plan: SchedulePlan, owners: list, tokens: torch.Tensor) -> None:
        """Replay the next decode step on this step's draws (still on the device) when its plan can
        be guessed: nothing waiting, every sequence goes on (not at max_tokens) in its current block."""
        if not self.config.decode_ahead or self.scheduler.waiting or len(owners) != len(plan.seqs):
            return
        bs = self.config.block_size
        pos = [e.start_pos + 1 for e in plan.seqs]
        if any(p % bs == 0 for p in pos):
            return  # a new block: the scheduler allocates it
        for _, req, smp in owners:
            mt = req.params.max_tokens
            if mt is not None and len(smp.token_ids) + 1 >= mt:
                return  # this step's token is its last
        with torch.inference_mode():
            logits = self.graphs.launch_ahead(tokens, pos, [e.block_table for e in plan.seqs])
        if logits is not None:
            self._ahead = _Ahead(tuple(e.seq_id for e in plan.seqs), tuple(pos),
                                 tuple(e.block_table[p // bs] for e, p in zip(plan.seqs, pos)), logits)

    def _banned(self, params: SamplingParams, num_out: int) -> tuple[int, ...]:
        if num_out >= params.min_tokens:
            return ()
        return tuple(sorted(set(params.stop_ids) | (set() if params.ignore_eos else set(self.eog_ids))))

    def _advance(self, req: _Request, smp: _Sample, tok: int, lp: dict[int, float] | None, seq) -> None:
        """Record one sampled token: logprobs, text, stop strings, finish reason."""
        smp.token_ids.append(tok)
        if lp is not None:
            smp.logprobs.append(lp)
        key = (req.request_id, smp.index)
        stop_token = seq is not None and seq.finish_reason == "stop" and seq.stop_reason != "stop_string"
        if not stop_token or req.params.include_stop_str_in_output:
            hit = smp.text.append(smp.decoder.push(tok))
        else:
            hit = False
        if seq is not None and not hit:  # finished by the scheduler: EOS, stop id, max_tokens, context end
            smp.text.append(smp.decoder.flush())
            smp.finish_reason, smp.stop_reason = seq.finish_reason, seq.stop_reason
        elif hit:  # a stop string wins over a length limit reached by the same token
            smp.finish_reason, smp.stop_reason = "stop", smp.text.matched
            if seq is None:
                self.scheduler.stop_sequence(self._seq_of[key], "stop_string")
        if smp.finish_reason is not None:
            self._seq_of.pop(key, None)

    # ---- the forward --------------------------------------------------------------------------
    def _forward(self, seqs: list[tuple[list[int], int]], block_tables: list[list[int]], kv_caches,
                 logits: str) -> torch.Tensor:
        """seqs: (new token ids, start position) per sequence -> logits ("last": (S, V), "all": (T, V))."""
        dev = self.device
        meta = build_metadata([len(t) for t, _ in seqs], [p for _, p in seqs], block_tables,
                              self.config.block_size, kv_caches, dev, logits=logits)
        ids = [t for toks, _ in seqs for t in toks]
        pos = [p for toks, start in seqs for p in range(start, start + len(toks))]
        with torch.inference_mode():
            return self.model(torch.tensor(ids, dtype=torch.int64, device=dev),
                              torch.tensor(pos, dtype=torch.int64, device=dev), meta)

    def _execute(self, plan: SchedulePlan) -> torch.Tensor:  # (num sampled entries, V)
        for src, dst in plan.block_copies:  # copy-on-write of blocks shared by forked samples
            for k, v in self.kv_caches:
                k[dst].copy_(k[src])
                v[dst].copy_(v[src])
        ahead, self._ahead, self.ran_graph = self._ahead, None, False
        if ahead is not None:
            if ahead.matches(plan, self.config.block_size):
                self.ahead_used += 1
                self.ran_graph = True
                return ahead.logits  # (S, V), launched during the last step
            self.ahead_dropped += 1
        if self.graphs is not None and all(len(e.token_ids) == 1 and e.sample for e in plan.seqs):
            seqs = plan.seqs
            with torch.inference_mode():
                logits = self.graphs.run([e.token_ids[0] for e in seqs], [e.start_pos for e in seqs],
                                         [e.block_table for e in seqs])  # fmt: skip
            if logits is not None:
                self.ran_graph = True
                return logits  # (S, V)
        seqs = [(list(e.token_ids), e.start_pos) for e in plan.seqs]
        tables = [list(e.block_table) for e in plan.seqs]
        if self.config.batch_invariant and all(len(t) == 1 for t, _ in seqs):  # each row: a batch of one
            logits = torch.cat([self._forward([s], [t], self.kv_caches, "last")
                                for s, t in zip(seqs, tables)])  # fmt: skip
        else:
            logits = self._forward(seqs, tables, self.kv_caches, "last")  # (S, V)
        rows = [i for i, e in enumerate(plan.seqs) if e.sample]
        return logits if len(rows) == len(plan.seqs) else logits[rows]

    def _prompt_logprobs(self, prompt_ids: list[int], k: int) -> list[dict[int, float] | None]:
        """[None, lp(t_1 | t_0), lp(t_2 | t_0 t_1), ...]: top-k of each position plus the actual token."""
        bs, T = self.config.block_size, len(prompt_ids)
        nb = -(-T // bs)
        scratch = self._allocate(nb)
        logits = self._forward([(prompt_ids, 0)], [list(range(nb))], scratch, "all").float().cpu()  # (T, V)
        return [None] + [top_logprobs(logits[i], k, prompt_ids[i + 1]) for i in range(T - 1)]
