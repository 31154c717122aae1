"""The sampler: raw logits -> one token per sequence, plus the logprobs asked for.

For one sequence with raw logits z (V,), prompt tokens P and output tokens O (counts c_t in O):

    repetition (t in P or O):  z_t <- z_t / r  if z_t > 0  else  z_t * r
    frequency / presence:      z_t <- z_t - f * c_t - p * [c_t > 0]
    banned (min_tokens):       z_t <- -inf for EOS / stop ids while |O| < min_tokens
    temperature:               z <- z / T                      (T = 0: greedy, argmax of the penalized z)
    top-k:                     keep z_t >= the k-th largest z   (ties kept)
    top-p:                     sort probs descending; drop a token when the mass strictly before it >= p
    min-p:                     drop t when softmax(z)_t < min_p * max softmax(z)
    draw:                      t ~ softmax(z) with the sequence's torch.Generator (seeded = reproducible)

These are vLLM's definitions and order. Logprobs are vLLM's default ("raw"): log_softmax of the
model's logits before any of the transforms above; the top-K plus the sampled token.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from ..sampling_params import SamplingParams


@dataclass
class SamplingRow:
    """What the sampler needs to know about one sequence at this step."""

    params: SamplingParams
    prompt_ids: list[int]
    output_ids: list[int]
    generator: torch.Generator | None = None  # None = the sampler's default generator
    banned_ids: tuple[int, ...] = ()  # forced to -inf this step (EOS / stop ids under min_tokens)


@dataclass
class SampleResult:
    token_ids: list[int]  # one per row
    logprobs: list[dict[int, float] | None]  # per row: {token_id: logprob}, None when not asked


def apply_penalties(
    logits: torch.Tensor,  # (V,) float32
    prompt_ids: list[int],
    output_ids: list[int],
    *,
    repetition: float = 1.0,
    frequency: float = 0.0,
    presence: float = 0.0,
) -> torch.Tensor:  # (V,) float32, a new tensor
    """vLLM's penalties: repetition on prompt+output tokens; frequency/presence on output counts.

    Returns `logits` itself when every penalty is off, a new tensor otherwise.
    """
    if repetition == 1.0 and frequency == 0.0 and presence == 0.0:
        return logits
    z = logits.clone()
    V = z.shape[0]
    if repetition != 1.0 and (prompt_ids or output_ids):
        seen = torch.zeros(V, dtype=torch.bool, device=z.device)
        seen[torch.tensor(prompt_ids + output_ids, dtype=torch.long, device=z.device)] = True
        z = torch.where(seen, torch.where(z > 0, z / repetition, z * repetition), z)
    if (frequency != 0.0 or presence != 0.0) and output_ids:
        ids = torch.tensor(output_ids, dtype=torch.long, device=z.device)
        counts = torch.bincount(ids, minlength=V).to(z.dtype)  # (V,)
        z = z - frequency * counts - presence * (counts > 0).to(z.dtype)
    return z


def apply_top_k(logits: torch.Tensor, k: int) -> torch.Tensor:  # (V,) -> (V,)
    """Keep the k largest logits (and any tied with the k-th); k <= 0 or k >= V is a no-op."""
    if k <= 0 or k >= logits.shape[-1]:
        return logits
    kth = torch.topk(logits, k).values[-1]
    return logits.masked_fill(logits < kth, float("-inf"))


def apply_top_p(logits: torch.Tensor, p: float) -> torch.Tensor:  # (V,) -> (V,)
    """Keep the smallest most-likely set whose mass reaches p (the top token is always kept)."""
    if p >= 1.0:
        return logits
    probs = torch.softmax(logits, dim=-1)
    sorted_probs, order = torch.sort(probs, descending=True)
    mass_before = torch.cumsum(sorted_probs, dim=-1) - sorted_probs  # exclusive prefix sum
    drop_sorted = mass_before >= p
    drop_sorted[0] = False
    drop = torch.zeros_like(drop_sorted).scatter_(0, order, drop_sorted)
    return logits.masked_fill(drop, float("-inf"))


def apply_min_p(logits: torch.Tensor, min_p: float) -> torch.Tensor:  # (V,) -> (V,)
    """Drop tokens whose probability is below min_p times the top probability."""
    if min_p <= 0.0:
        return logits
    probs = torch.softmax(logits, dim=-1)
    return logits.masked_fill(probs < min_p * probs.max(), float("-inf"))


def processed_logits(raw: torch.Tensor, row: SamplingRow) -> torch.Tensor:  # (V,) -> (V,)
    """Everything before the draw: penalties, bans, temperature, top-k, top-p, min-p."""
    sp = row.params
    z = apply_penalties(
        raw.float(),
        row.prompt_ids,
        row.output_ids,
        repetition=sp.repetition_penalty,
        frequency=sp.frequency_penalty,
        presence=sp.presence_penalty,
    )
    if row.banned_ids:
        z = z.clone() if z is raw else z
        z[list(row.banned_ids)] = float("-inf")
    if sp.greedy:
        return z
    z = z / sp.temperature
    z = apply_top_k(z, sp.top_k)
    z = apply_top_p(z, sp.top_p)
    return apply_min_p(z, sp.min_p)


def top_logprobs(raw: torch.Tensor, k: int, chosen: int) -> dict[int, float]:
    """log_softmax of the raw logits (V,): the top-k entries plus the chosen token."""
    lp = torch.log_softmax(raw.float(), dim=-1)  # (V,)
    out: dict[int, float] = {}
    if k > 0:
        vals, ids = torch.topk(lp, min(k, lp.shape[0]))
        out = {int(i): float(v) for i, v in zip(ids.tolist(), vals.tolist())}
    out.setdefault(int(chosen), float(lp[chosen]))
    return out


class Draw:
    """One step's draws: `tokens` (S,) int64 on the device (None when drawn on the host), and
    `result()` -> SampleResult, the host's copy (it waits for the device, once)."""

    def __init__(self, tokens: torch.Tensor | None, finish: Callable[[], SampleResult]):
        self.tokens, self._finish, self._res = tokens, finish, None

    def result(self) -> SampleResult:
        if self._res is None:
            self._res = self._finish()
        return self._res


class Sampler:
    """Samples one token for each row of a (S, V) logits batch; stateless apart from the default rng."""

    def __init__(self, seed: int | None = None, *, on_device: bool | None = None):
        self.on_device = on_device  # None: where the logits are (GPU logits -> engine/device_sampler.py)
        self.by_row = False  # logprobs of each row on its own (the engine's batch-invariant mode)
        self.default_generator = torch.Generator(device="cpu")
        if seed is None:
            self.default_generator.seed()
        else:
            self.default_generator.manual_seed(seed)

    def __call__(self, logits: torch.Tensor, rows: list[SamplingRow]) -> SampleResult:
        """logits: (S, V) raw model outputs, one row per entry of `rows`."""
        return self.draw(logits, rows).result()

    def draw(self, logits: torch.Tensor, rows: list[SamplingRow]) -> Draw:
        """Like __call__, but on the device the ids are not read back yet (Draw.tokens, Draw.result)."""
        if logits.dim() != 2 or logits.shape[0] != len(rows):
            raise ValueError(f"sampler got logits of shape {tuple(logits.shape)} for {len(rows)} sequences")
        if self.on_device or (self.on_device is None and logits.device.type == "cuda"):
            from .device_sampler import draw_on_device  # imports Triton

            return draw_on_device(logits.detach(), rows, self.default_generator, self.by_row)
        res = self._sample_cpu(logits, rows)
        return Draw(None, lambda: res)

    def _sample_cpu(self, logits: torch.Tensor, rows: list[SamplingRow]) -> SampleResult:
        logits = logits.detach().float().cpu()
        tokens: list[int] = []
        for i, row in enumerate(rows):
            z = processed_logits(logits[i], row)
            if row.params.greedy:
                tok = int(torch.argmax(z))
            else:
                probs = torch.softmax(z, dim=-1)
                gen = row.generator if row.generator is not None else self.default_generator
                tok = int(torch.multinomial(probs, 1, generator=gen))
            tokens.append(tok)
        lps = [
            None if row.params.logprobs is None else top_logprobs(logits[i], row.params.logprobs, tokens[i])
            for i, row in enumerate(rows)
        ]
        return SampleResult(tokens, lps)


def seeded_generator(seed: int, index: int = 0) -> torch.Generator:
    """The generator of sequence `index` of a request with `seed` (n > 1 sequences differ, reproducibly)."""
    g = torch.Generator(device="cpu")
    g.manual_seed((seed * 1_000_003 + index) % (1 << 63))
    return g
