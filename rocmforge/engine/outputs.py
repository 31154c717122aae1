"""What a finished (or in-flight) request hands back, with vLLM's names, and the text tracker.

`RequestOutput.outputs[i]` is the i-th of the request's `n` samples. Logprobs are dicts
{token_id: logprob} (natural log, of the model's raw distribution): one per generated token, and one
per prompt token after the first (`prompt_logprobs[0]` is None: nothing predicts the first token).

`IncrementalText` turns decoded pieces into the visible text: it cuts the text at the first stop
string (keeping it only with include_stop_str_in_output) and, for streaming, holds back any tail
that could still grow into a stop string, so a streamed delta is never taken back.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class CompletionOutput:
    index: int  # which of the request's n samples
    text: str  # generated text (stop string and finishing EOS/stop token left out by default)
    token_ids: list[int]  # generated token ids, the finishing EOS / stop token included (as vLLM)
    finish_reason: str | None = None  # "stop" | "length" | "abort"; None while running
    stop_reason: int | str | None = None  # the stop token id or the stop string matched; None for EOS
    logprobs: list[dict[int, float]] | None = None  # per generated token, when SamplingParams.logprobs
    cumulative_logprob: float | None = None  # sum of the sampled tokens' logprobs, when logprobs

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None


@dataclass
class RequestOutput:
    request_id: str
    prompt: str | None  # the text prompt, None when given as token ids
    prompt_token_ids: list[int]
    outputs: list[CompletionOutput] = field(default_factory=list)
    prompt_logprobs: list[dict[int, float] | None] | None = None  # (len(prompt_token_ids),) when asked
    finished: bool = False  # every sample finished

    def __repr__(self) -> str:
        texts = [o.text for o in self.outputs]
        return f"RequestOutput(id={self.request_id!r}, prompt={self.prompt!r}, texts={texts!r})"


class IncrementalText:
    """The visible text of one sample, grown piece by piece, cut at the first stop string."""

    def __init__(self, stop_strings: tuple[str, ...] = (), include_stop: bool = False):
        self.stops = stop_strings
        self.include_stop = include_stop
        self.max_stop = max((len(s) for s in stop_strings), default=0)
        self.text = ""
        self.emitted = 0  # characters already handed out by delta()
        self.matched: str | None = None  # the stop string found, once found

    def append(self, piece: str) -> bool:
        """Add decoded text; True when this completes a stop string (the text is then cut)."""
        if self.matched is not None or not piece:
            return False
        # NOTE: a stop string may straddle the old text and the new piece: search from max_stop - 1 back.
        start = max(0, len(self.text) - self.max_stop + 1)
        self.text += piece
        best: tuple[int, str] | None = None
        for s in self.stops:
            i = self.text.find(s, start)
            if i >= 0 and (best is None or i < best[0]):
                best = (i, s)
        if best is None:
            return False
        i, s = best
        self.matched = s
        self.text = self.text[: i + len(s)] if self.include_stop else self.text[:i]
        return True

    def _held_back(self) -> int:
        """Length of the longest tail of the text that is a proper prefix of some stop string."""
        for n in range(min(self.max_stop - 1, len(self.text)), 0, -1):
            tail = self.text[-n:]
            if any(s.startswith(tail) for s in self.stops):
                return n
        return 0

    def delta(self, final: bool = False) -> str:
        """New text safe to show; final=True releases everything (the sample has finished)."""
        end = len(self.text) if final or self.matched is not None else len(self.text) - self._held_back()
        if end <= self.emitted:
            return ""
        out = self.text[self.emitted : end]
        self.emitted = end
        return out
