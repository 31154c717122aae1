"""The two generation routes: a validated request -> engine requests -> a JSON body or an SSE stream.

    ChatCompletionRequest -> chat template -> token ids ┐
    CompletionRequest     -> token ids (one per prompt) ┴> SamplingParams -> AsyncEngine.submit
        stream=false: wait for every handle, one JSON body        (chat.completion / text_completion)
        stream=true : `data: {chunk}` per Update, usage chunk when asked, then `data: [DONE]`

Choice index = prompt index * n + sample index (OpenAI's order). A client that goes away (the
stream is closed, or a watcher sees http.disconnect) aborts its handles: KV blocks are freed now.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

from fastapi import Request
from fastapi.responses import JSONResponse, StreamingResponse

from ..engine.async_engine import AsyncEngine, QueueFullError, RequestHandle, Update
from .errors import APIError, bad_request
from .protocol import ChatCompletionRequest, CompletionRequest, chat_max_tokens, sampling_params
from .responses import chat_choice, chat_logprobs, completion_choice, completion_logprobs, usage
from .structured import StructuredOutputError


@dataclass
class Runtime:
    """What the routes need once the model is loaded."""

    llm: object  # rocmforge.LLM
    engine: AsyncEngine
    metrics: object  # server.metrics.Metrics
    guide: object  # server.structured.JsonGuide
    model_name: str
    created: int


def check_model(rt: Runtime, name: str | None) -> None:
    if name is not None and name != rt.model_name:
        raise APIError(404, f"the model {name!r} does not exist; this server serves {rt.model_name!r}",
                       param="model", code="model_not_found")  # fmt: skip


def _budget(rt: Runtime, ids: list[int], max_tokens: int | None) -> int:
    """Check the prompt against the context; the max_tokens to use (None = up to the context end)."""
    limit, n = rt.llm.max_model_len, len(ids)
    if n == 0:
        raise bad_request("the prompt is empty (0 tokens); give at least one token", param="prompt")
    room = limit - n
    if room < 1 or (max_tokens is not None and max_tokens > room):
        want = f"{n} in the prompt" + (f" + {max_tokens} max_tokens" if max_tokens is not None else "")
        raise bad_request(f"this model's maximum context length is {limit} tokens, but the request needs "
                          f"{want}; shorten the prompt or lower max_tokens", param="messages",
                          code="context_length_exceeded")  # fmt: skip
    return room if max_tokens is None else max_tokens


def _check_vocab(rt: Runtime, ids: list[int]) -> None:
    V = rt.llm.model_config.vocab_size
    bad = [t for t in ids if not 0 <= t < V]
    if bad:
        raise bad_request(f"prompt token id {bad[0]} is outside the vocabulary (size {V})", param="prompt")


async def _processor(rt: Runtime, req) -> object | None:
    constrained, schema = req.json_schema()
    if not constrained:
        return None
    try:  # NOTE: the first compile builds the vocabulary table (seconds): off the event loop
        return await asyncio.to_thread(rt.guide.processor, schema)
    except StructuredOutputError as e:
        raise bad_request(str(e), param="response_format") from e


def _submit(rt: Runtime, prompts: list[tuple[str | None, list[int]]], params, proc, tag: str):
    try:
        params.check_vocab(rt.llm.model_config.vocab_size)
    except ValueError as e:
        raise bad_request(str(e).replace("SamplingParams.", ""), param="stop_token_ids") from e
    handles = []
    try:
        for k, (text, ids) in enumerate(prompts):
            # NOTE: one SamplingParams object per handle: the engine keys logits processors by it.
            sp = params if k == 0 else dataclasses.replace(params)
            handles.append(rt.engine.submit(ids, sp, prompt=text, processor=proc, tag=f"{tag}/{k}"))
    except QueueFullError as e:
        for h in handles:
            h.cancel()
        raise APIError(503, str(e), code="queue_full") from e
    return handles


async def _watch(request: Request, handles: list[RequestHandle]) -> None:
    """Cancel the handles once the client disconnects (polled: the body has been read already)."""
    while True:
        await asyncio.sleep(0.2)
        if await request.is_disconnected():
            for h in handles:
                h.cancel()
            return


async def _merge(handles: list[RequestHandle]) -> AsyncIterator[tuple[int, Update]]:
    """Updates of several handles as they come: (handle index, update)."""
    pending = {asyncio.ensure_future(h.__anext__()): k for k, h in enumerate(handles)}
    try:
        while pending:
            done, _ = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            for fut in done:
                k = pending.pop(fut)
                try:
                    upd = fut.result()
                except StopAsyncIteration:  # cancelled meanwhile (the client went away)
                    continue
                yield k, upd
                if not upd.finished:
                    pending[asyncio.ensure_future(handles[k].__anext__())] = k
    finally:
        for fut in pending:
            fut.cancel()


async def _collect(request: Request, handles: list[RequestHandle]) -> list:
    """Wait for every handle's last Update (cancelling them if the client goes away)."""
    watcher = asyncio.ensure_future(_watch(request, handles))
    finals: list = [None] * len(handles)
    try:
        async for k, upd in _merge(handles):
            if upd.finished:
                if upd.error is not None:
                    raise APIError(500 if upd.error.startswith("the engine failed") else 400, upd.error)
                finals[k] = upd.output
    finally:
        watcher.cancel()
        for h in handles:
            h.cancel()
    return finals


def _sse(obj) -> str:
    return f"data: {json.dumps(obj, ensure_ascii=False, separators=(',', ':'))}\n\n"


def _stream(
    request: Request, handles, *, make_chunks, head, n: int, include_usage: bool
) -> StreamingResponse:
    """SSE: chunks from make_chunks(choice index, SampleDelta), a usage chunk when asked, [DONE]."""

    async def body():
        watcher = asyncio.ensure_future(_watch(request, handles))
        completion = 0
        try:
            for chunk in head():
                yield _sse(chunk)
            async for k, upd in _merge(handles):
                if upd.error is not None:
                    yield _sse(APIError(400, upd.error).body())
                    break
                for d in upd.samples:
                    completion += len(d.token_ids)
                    for chunk in make_chunks(k * n + d.index, d):
                        yield _sse(chunk)
            if include_usage:
                prompt = sum(len(h.prompt_ids) for h in handles)
                yield _sse({**make_chunks.base(), "choices": [], "usage": usage(prompt, completion)})
            yield "data: [DONE]\n\n"
        finally:  # also on a client that closed the stream: abort whatever still runs
            watcher.cancel()
            for h in handles:
                h.cancel()

    return StreamingResponse(body(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})  # fmt: skip


class _Chunks:
    """Chunk factory of one response: base fields + per-delta choice chunks."""

    def __init__(self, obj: str, rid: str, model: str, include_usage: bool, build):
        self.fields = {"id": rid, "object": obj, "created": int(time.time()), "model": model}
        self.include_usage, self.build = include_usage, build

    def base(self) -> dict:
        return dict(self.fields)

    def __call__(self, index: int, d) -> list[dict]:
        extra = {"usage": None} if self.include_usage else {}
        return [{**self.fields, "choices": [c], **extra} for c in self.build(index, d)]


# ---- /v1/chat/completions -----------------------------------------------------------------------
async def chat_completions(rt: Runtime, request: Request, req: ChatCompletionRequest):
    check_model(rt, req.model)
    if not req.messages:
        raise bad_request("messages must hold at least one message", param="messages")
    for i, m in enumerate(req.messages):
        if m.content is None and m.role != "assistant":
            raise bad_request(
                f"messages.{i}.content is required for a {m.role} message", f"messages.{i}.content"
            )
    if req.top_logprobs is not None and not req.logprobs:
        raise bad_request("top_logprobs needs logprobs: true", param="top_logprobs")
    conv = [
        {"role": "system" if m.role == "developer" else m.role, "content": m.text()} for m in req.messages
    ]
    try:
        text = rt.llm.render_chat(conv, add_generation_prompt=req.add_generation_prompt)
    except Exception as e:  # a template's raise_exception (role order...) or no template
        raise bad_request(f"the chat template rejected the messages: {e}", param="messages") from e
    ids = rt.llm.tokenize(text, add_special=False)
    max_tokens = _budget(rt, ids, chat_max_tokens(req))
    k = (req.top_logprobs or 0) if req.logprobs else None
    params = sampling_params(req, max_tokens=max_tokens, logprobs=k)
    proc = await _processor(rt, req)
    rid = f"chatcmpl-{uuid.uuid4().hex[:24]}"
    handles = _submit(rt, [(text, ids)], params, proc, rid)
    tok, want_lp = rt.llm.tokenizer, req.logprobs
    if not req.stream:
        (out,) = await _collect(request, handles)
        choices = [chat_choice(o, tok, want_lp, req.top_logprobs or 0) for o in out.outputs]
        used = usage(len(ids), sum(len(o.token_ids) for o in out.outputs))
        return JSONResponse({"id": rid, "object": "chat.completion", "created": int(time.time()),
                             "model": rt.model_name, "choices": choices, "usage": used})  # fmt: skip

    def build(index: int, d) -> list[dict]:
        out = []
        if d.text or d.token_ids:
            lp = chat_logprobs(d.token_ids, d.logprobs, tok, req.top_logprobs or 0) if want_lp else None
            out.append({"index": index, "delta": {"content": d.text}, "logprobs": lp, "finish_reason": None})
        if d.finish_reason is not None:
            out.append({"index": index, "delta": {}, "logprobs": None, "finish_reason": d.finish_reason})
        return out

    chunks = _Chunks("chat.completion.chunk", rid, rt.model_name, req.include_usage, build)

    def head():
        extra = {"usage": None} if req.include_usage else {}
        return [{**chunks.base(), "choices": [{"index": i, "delta": {"role": "assistant", "content": ""},
                                               "logprobs": None, "finish_reason": None}], **extra}
                for i in range(req.n)]  # fmt: skip

    return _stream(request, handles, make_chunks=chunks, head=head, n=req.n, include_usage=req.include_usage)


# ---- /v1/completions ----------------------------------------------------------------------------
def _prompts(rt: Runtime, prompt) -> list[tuple[str | None, list[int]]]:
    if isinstance(prompt, str):
        items: list = [prompt]
    elif not prompt:
        raise bad_request("prompt must not be empty", param="prompt")
    elif all(isinstance(p, int) for p in prompt):
        items = [list(prompt)]
    else:
        items = list(prompt)
    if len(items) > 64:
        raise bad_request(f"at most 64 prompts in one request, got {len(items)}", param="prompt")
    out = []
    for p in items:
        ids = rt.llm.tokenize(p) if isinstance(p, str) else list(p)
        _check_vocab(rt, ids)
        out.append((p if isinstance(p, str) else None, ids))
    return out


async def completions(rt: Runtime, request: Request, req: CompletionRequest):
    check_model(rt, req.model)
    prompts = _prompts(rt, req.prompt)
    max_tokens = min(_budget(rt, ids, req.max_tokens) for _, ids in prompts)
    params = sampling_params(req, max_tokens=max_tokens, logprobs=req.logprobs)
    proc = await _processor(rt, req)
    rid = f"cmpl-{uuid.uuid4().hex[:24]}"
    handles = _submit(rt, prompts, params, proc, rid)
    tok, k_lp, n = rt.llm.tokenizer, req.logprobs, req.n
    if not req.stream:
        outs = await _collect(request, handles)
        choices = [completion_choice(p * n + o.index, o, tok, k_lp, echo=prompts[p][0] if req.echo else None)
                   for p, out in enumerate(outs) for o in out.outputs]  # fmt: skip
        n_out = sum(len(o.token_ids) for x in outs for o in x.outputs)
        used = usage(sum(len(ids) for _, ids in prompts), n_out)
        return JSONResponse({"id": rid, "object": "text_completion", "created": int(time.time()),
                             "model": rt.model_name, "choices": choices, "usage": used})  # fmt: skip

    def build(index: int, d) -> list[dict]:
        lp = completion_logprobs(d.token_ids, d.logprobs, tok, k_lp) if k_lp is not None else None
        if not (d.text or d.token_ids or d.finish_reason):
            return []
        return [{"index": index, "text": d.text, "logprobs": lp, "finish_reason": d.finish_reason}]

    chunks = _Chunks("text_completion", rid, rt.model_name, req.include_usage, build)
    return _stream(
        request, handles, make_chunks=chunks, head=lambda: [], n=n, include_usage=req.include_usage
    )
