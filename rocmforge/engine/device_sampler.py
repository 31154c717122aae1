"""The sampler's GPU path: the same transforms as engine/sampler.py over the whole batch on the device.

    z = raw logits (S, V) fp32
    penalties        kernels/sampling.apply_penalties: repetition over prompt + output, frequency /
                     presence over output counts (counts built on the device from the id lists)
    banned           z[s, banned ids] = -inf
    temperature      z / T per row (greedy rows: T = 0, left as is)
    top-k/p, min-p   kernels/sampling.apply_top_k_top_p_min_p (one sort per row)
    draw             kernels/sampling.sample_gumbel: argmax(z + Gumbel noise), Philox keyed by
                     (seed, offset): greedy rows take argmax z

so the (S, V) logits never leave the GPU: one host sync per step, for the S token ids (plus the
requested logprobs, which are log_softmax of the raw logits as on the CPU path). `draw_on_device`
returns a `Draw` whose ids are still on the device: the engine can launch the next decode step from
them before it reads them (engine/llm_engine.py, decode ahead). A seeded sample's
seed is its CPU generator's initial seed (engine/sampler.seeded_generator) and its offset the
number of tokens it has drawn, so its draws are reproducible; an unseeded row takes a fresh seed from
the sampler's default generator. The draws differ from the CPU path's torch.multinomial ones
(another random stream), the distribution is the same.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..kernels.sampling import apply_penalties, apply_top_k_top_p_min_p, sample_gumbel
from .sampler import Draw, SampleResult, SamplingRow


def _counts(rows: list[SamplingRow], V: int, device, prompt: bool) -> torch.Tensor:
    """(S, V) int32 output-token counts, or with prompt=True a bool mask of the prompt tokens."""
    r_idx, t_idx = [], []
    for r, row in enumerate(rows):
        ids = row.prompt_ids if prompt else row.output_ids
        r_idx.extend([r] * len(ids))
        t_idx.extend(ids)
    out = torch.zeros(len(rows), V, dtype=torch.int32, device=device)
    if t_idx:
        idx = torch.tensor([r_idx, t_idx], dtype=torch.int64).to(device, non_blocking=True)
        out.index_put_((idx[0], idx[1]), torch.ones(len(t_idx), dtype=torch.int32, device=device),
                       accumulate=True)  # fmt: skip
    return out > 0 if prompt else out


def _row_params(rows: list[SamplingRow]) -> torch.Tensor:
    """(7, S) float64 host table: T, top_k, top_p, min_p, repetition, frequency, presence."""
    return torch.tensor([[0.0 if r.params.greedy else r.params.temperature for r in rows],
                         [r.params.top_k for r in rows], [r.params.top_p for r in rows],
                         [r.params.min_p for r in rows], [r.params.repetition_penalty for r in rows],
                         [r.params.frequency_penalty for r in rows],
                         [r.params.presence_penalty for r in rows]], dtype=torch.float64)  # fmt: skip


def draw_on_device(logits: torch.Tensor, rows: list[SamplingRow],
                   default_generator: torch.Generator, by_row: bool = False) -> Draw:  # fmt: skip
    """logits (S, V) raw model outputs on the device, one row per entry of `rows`; by_row: each row's
    logprobs and top-k as if it were alone (batch-invariant mode; see _drawn)."""
    S, V = logits.shape
    dev = logits.device
    raw = logits.float()
    sp = [r.params for r in rows]
    rep_on = any(p.repetition_penalty != 1.0 for p in sp)
    penalized = rep_on or any(p.frequency_penalty or p.presence_penalty for p in sp)
    banned = [(r, t) for r, row in enumerate(rows) for t in row.banned_ids]
    greedy = all(p.greedy for p in sp)
    if greedy and not penalized and not banned:  # the common decode batch: one argmax
        return _drawn(raw.argmax(dim=-1), raw, rows, by_row)
    z = raw.clone() if raw is logits else raw  # the raw logits stay for logprobs
    table = _row_params(rows).to(dev, torch.float32, non_blocking=True)  # (7, S)
    temp, top_k, top_p, min_p, rep, freq, pres = table
    if penalized:
        counts = _counts(rows, V, dev, prompt=False)
        prompt = _counts(rows, V, dev, prompt=True) if rep_on else None
        apply_penalties(z, counts if prompt is None else (prompt, counts), rep, freq, pres)
    if banned:
        idx = torch.tensor(banned, dtype=torch.int64).T.to(dev, non_blocking=True)  # (2, nb)
        z[idx[0], idx[1]] = float("-inf")
    if greedy:  # argmax (first index on ties, as the Gumbel kernel at T = 0)
        return _drawn(z.argmax(dim=-1), raw, rows, by_row)
    z = apply_top_k_top_p_min_p(z / torch.where(temp > 0, temp, 1.0)[:, None], top_k.long(), top_p, min_p)
    seeds = [r.generator.initial_seed() if r.generator is not None
             else int(torch.randint(0, 1 << 62, (), generator=default_generator)) for r in rows]  # fmt: skip
    offsets = [len(r.output_ids) for r in rows]
    keys = torch.tensor([seeds, offsets], dtype=torch.int64).to(dev, non_blocking=True)  # (2, S)
    # NOTE: z is already divided by T; the kernel divides by its temperatures, so give it 1 (or 0: greedy)
    tokens = sample_gumbel(z.contiguous(), (temp > 0).float(), keys[0].contiguous(), keys[1].contiguous())
    return _drawn(tokens, raw, rows, by_row)


def _drawn(tokens: torch.Tensor, raw: torch.Tensor, rows: list[SamplingRow], by_row: bool = False) -> Draw:
    """Token ids (S,) and, where asked, logprobs of the raw logits (S, V), as a Draw: every read of
    the logits is enqueued here, so the caller may run the next forward (which overwrites a graph's
    logits) before reading the result; on CUDA the ids come back through pinned memory and an event
    (the one host sync, which waits for this step's work only)."""
    S, V = raw.shape
    want = [r.params.logprobs for r in rows]
    tokens = tokens.to(torch.int64)
    parts = [tokens]
    if any(k is not None for k in want):
        kmax = min(max(max(k for k in want if k is not None), 1), V)
        if by_row:  # each row as if alone: its own log_softmax and top-k of its own k (bf16 logits tie
            # often, and torch.topk's pick among tied values depends on k)
            lps = [torch.log_softmax(raw[i:i + 1], dim=-1) for i in range(S)]  # (1, V) each
            tops = [torch.topk(x, min(max(k or 1, 1), V), dim=-1) for x, k in zip(lps, want)]
            lp = torch.cat(lps)  # (S, V)
            pad = [(0, kmax - t.values.shape[1]) for t in tops]
            top_v = torch.cat([F.pad(t.values, p, value=float("-inf")) for t, p in zip(tops, pad)])
            top_i = torch.cat([F.pad(t.indices, p) for t, p in zip(tops, pad)])  # (S, kmax)
        else:
            lp = torch.log_softmax(raw, dim=-1)  # (S, V)
            top_v, top_i = torch.topk(lp, kmax, dim=-1)  # (S, kmax)
        parts += [top_v, top_i, lp.gather(1, tokens[:, None])[:, 0]]  # chosen (S,)
    host, ready = parts, None
    if tokens.device.type == "cuda":
        host = [torch.empty(t.shape, dtype=t.dtype, pin_memory=True) for t in parts]
        for h, t in zip(host, parts):
            h.copy_(t, non_blocking=True)
        ready = torch.cuda.Event()
        ready.record()

    def finish() -> SampleResult:
        if ready is not None:
            ready.synchronize()
        if len(host) == 1:
            return SampleResult(host[0].tolist(), [None] * S)
        tok, top_v, top_i, chosen = (h.tolist() for h in host)
        out: list[dict[int, float] | None] = []
        for s, k in enumerate(want):
            if k is None:
                out.append(None)
                continue
            d = {int(i): float(v) for i, v in zip(top_i[s][:k], top_v[s][:k])}
            d.setdefault(tok[s], float(chosen[s]))
            out.append(d)
        return SampleResult(tok, out)

    return Draw(tokens, finish)
