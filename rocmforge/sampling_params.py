"""SamplingParams: how to pick each next token and when to stop, with vLLM's names and defaults.

A frozen dataclass checked once in `__post_init__`: a bad value raises a ValueError naming the field
and its allowed range, so a request fails at the edge, never deep inside the sampler.

Order of the logit transforms (see engine/sampler.py):
    penalties (repetition, frequency, presence) -> / temperature -> top-k -> top-p -> min-p -> draw
temperature == 0 means greedy (argmax); top-k / top-p / min-p are then irrelevant.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# Below this temperature the draw is greedy (vLLM's _SAMPLING_EPS).
GREEDY_EPS = 1e-5


@dataclass(frozen=True)
class SamplingParams:
    n: int = 1  # sequences to generate per prompt
    temperature: float = 1.0  # 0 = greedy
    top_p: float = 1.0  # nucleus: keep the smallest top set with mass >= top_p; 1 = off
    top_k: int = 0  # keep the k most likely tokens; 0 or -1 = off (stored as 0)
    min_p: float = 0.0  # drop tokens with prob < min_p * max prob; 0 = off
    repetition_penalty: float = 1.0  # > 1 discourages tokens seen in prompt or output; 1 = off
    frequency_penalty: float = 0.0  # subtracts penalty * count(token in output)
    presence_penalty: float = 0.0  # subtracts penalty * [token in output]
    seed: int | None = None  # per-request generator: same seed -> same tokens
    max_tokens: int | None = 16  # new tokens at most; None = up to the context end
    min_tokens: int = 0  # EOS / stop tokens are masked, stop strings ignored, until this many
    stop: str | list[str] | None = None  # stop strings, matched on the detokenized text
    stop_token_ids: list[int] | None = None  # extra token ids that end the sequence
    ignore_eos: bool = False  # keep going past EOS / end-of-generation tokens
    logprobs: int | None = None  # top-K logprobs per generated token (+ the sampled one); None = off
    prompt_logprobs: int | None = None  # top-K logprobs per prompt token (+ the actual one); None = off
    skip_special_tokens: bool = True  # leave special tokens out of the text
    include_stop_str_in_output: bool = False  # keep the matched stop string / stop token text
    # Normalized forms (filled by __post_init__): stop strings and stop ids as tuples.
    stop_strings: tuple[str, ...] = field(default=(), init=False, repr=False)
    stop_ids: tuple[int, ...] = field(default=(), init=False, repr=False)

    def __post_init__(self) -> None:
        def bad(name: str, rule: str) -> ValueError:
            return ValueError(f"SamplingParams.{name} must be {rule}, got {getattr(self, name)!r}")

        def is_int(v) -> bool:
            return isinstance(v, int) and not isinstance(v, bool)

        def is_num(v) -> bool:
            return isinstance(v, int | float) and not isinstance(v, bool)

        if not is_int(self.n) or self.n < 1:
            raise bad("n", "an integer >= 1")
        if not is_num(self.temperature) or not 0.0 <= self.temperature < float("inf"):
            raise bad("temperature", "a finite number >= 0 (0 = greedy)")
        if not is_num(self.top_p) or not 0.0 < self.top_p <= 1.0:
            raise bad("top_p", "in (0, 1] (1 = off)")
        if not is_int(self.top_k) or self.top_k < -1:
            raise bad("top_k", "an integer >= 1, or 0 / -1 for off")
        if not is_num(self.min_p) or not 0.0 <= self.min_p <= 1.0:
            raise bad("min_p", "in [0, 1] (0 = off)")
        if not is_num(self.repetition_penalty) or not 0.0 < self.repetition_penalty < float("inf"):
            raise bad("repetition_penalty", "a finite number > 0 (1 = off)")
        for name in ("frequency_penalty", "presence_penalty"):
            v = getattr(self, name)
            if not is_num(v) or not -2.0 <= v <= 2.0:
                raise bad(name, "in [-2, 2] (0 = off)")
        if self.seed is not None and not is_int(self.seed):
            raise bad("seed", "an integer or None")
        if self.max_tokens is not None and (not is_int(self.max_tokens) or self.max_tokens < 1):
            raise bad("max_tokens", "an integer >= 1, or None for up to the context end")
        if not is_int(self.min_tokens) or self.min_tokens < 0:
            raise bad("min_tokens", "an integer >= 0")
        if self.max_tokens is not None and self.min_tokens > self.max_tokens:
            raise ValueError(
                f"SamplingParams.min_tokens ({self.min_tokens}) must be <= max_tokens ({self.max_tokens})"
            )
        for name in ("logprobs", "prompt_logprobs"):
            v = getattr(self, name)
            if v is not None and (not is_int(v) or v < 0):
                raise bad(name, "an integer >= 0 (top-K count) or None for off")
        for name in ("ignore_eos", "skip_special_tokens", "include_stop_str_in_output"):
            if not isinstance(getattr(self, name), bool):
                raise bad(name, "True or False")

        stop = self.stop
        if stop is None:
            stops: tuple[str, ...] = ()
        elif isinstance(stop, str):
            stops = (stop,)
        elif isinstance(stop, list | tuple) and all(isinstance(s, str) for s in stop):
            stops = tuple(stop)
        else:
            raise bad("stop", "a string, a list of strings, or None")
        if any(s == "" for s in stops):
            raise bad("stop", "made of non-empty strings")
        ids = self.stop_token_ids
        if ids is None:
            stop_ids: tuple[int, ...] = ()
        elif isinstance(ids, list | tuple) and all(is_int(i) and i >= 0 for i in ids):
            stop_ids = tuple(ids)
        else:
            raise bad("stop_token_ids", "a list of token ids (integers >= 0) or None")
        # NOTE: frozen dataclass; normalizing once here keeps every reader free of str-vs-list cases.
        object.__setattr__(self, "top_k", 0 if self.top_k == -1 else self.top_k)
        object.__setattr__(self, "temperature", float(self.temperature))
        object.__setattr__(self, "stop_strings", stops)
        object.__setattr__(self, "stop_ids", stop_ids)

    @property
    def greedy(self) -> bool:
        return self.temperature < GREEDY_EPS

    def check_vocab(self, vocab_size: int) -> None:
        """Raise if a stop token id is outside the model's vocabulary."""
        for i in self.stop_ids:
            if i >= vocab_size:
                raise ValueError(
                    f"SamplingParams.stop_token_ids contains {i}, outside the vocabulary (size {vocab_size})"
                )
