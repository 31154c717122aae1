"""Response pieces in OpenAI's shapes: choices, logprobs (chat and legacy completions), usage.

Logprobs come from the engine as one {token_id: logprob} dict per generated token: the top-K plus
the sampled token (natural log of the model's distribution). A token's text is its bytes decoded
with replacement (a token may hold part of a UTF-8 character); `bytes` carries the exact bytes.
"""

from __future__ import annotations


def usage(prompt_tokens: int, completion_tokens: int) -> dict:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}  # fmt: skip


def _piece(tok, token_id: int) -> tuple[str, list[int]]:
    b = tok.token_bytes(int(token_id))
    return b.decode("utf-8", errors="replace"), list(b)


def _top(lp: dict[int, float], k: int) -> list[tuple[int, float]]:
    return sorted(lp.items(), key=lambda kv: -kv[1])[:k]


def chat_logprobs(token_ids: list[int], lps: list[dict[int, float]] | None, tok, k: int) -> dict:
    """{"content": [{"token", "logprob", "bytes", "top_logprobs": [...]}, ...]} for these tokens."""
    content = []
    for t, lp in zip(token_ids, lps or []):
        s, b = _piece(tok, t)
        top = []
        for tid, v in _top(lp, k):
            ts, tb = _piece(tok, tid)
            top.append({"token": ts, "logprob": v, "bytes": tb})
        content.append({"token": s, "logprob": lp[t], "bytes": b, "top_logprobs": top})
    return {"content": content}


def completion_logprobs(token_ids: list[int], lps: list[dict[int, float]] | None, tok, k: int,
                        offset: int = 0) -> dict:  # fmt: skip
    """Legacy shape: tokens, token_logprobs, top_logprobs [{text: lp}], text_offset."""
    tokens, token_lps, tops, offsets = [], [], [], []
    for t, lp in zip(token_ids, lps or []):
        s, _ = _piece(tok, t)
        tokens.append(s)
        token_lps.append(lp[t])
        tops.append({_piece(tok, tid)[0]: v for tid, v in _top(lp, k)})
        offsets.append(offset)
        offset += len(s)
    return {"tokens": tokens, "token_logprobs": token_lps, "top_logprobs": tops, "text_offset": offsets}


def chat_choice(o, tok, want_logprobs: bool, k: int) -> dict:
    """One chat choice from a CompletionOutput."""
    lp = chat_logprobs(o.token_ids, o.logprobs, tok, k) if want_logprobs else None
    return {"index": o.index, "message": {"role": "assistant", "content": o.text}, "logprobs": lp,
            "finish_reason": o.finish_reason}  # fmt: skip


def completion_choice(index: int, o, tok, k: int | None, echo: str | None = None) -> dict:
    text = (echo or "") + o.text
    lp = (
        completion_logprobs(o.token_ids, o.logprobs, tok, k, offset=len(echo or ""))
        if k is not None
        else None
    )
    return {"index": index, "text": text, "logprobs": lp, "finish_reason": o.finish_reason}
