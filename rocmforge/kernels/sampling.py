"""Sampling helpers that stay on the device: penalties, masks and a Gumbel-max draw (no host sync).

Penalties (vLLM's conventions), row s with parameters r = repetition[s], f = frequency[s], p = presence[s]:
    seen_j = prompt_mask[s, j] or c_j > 0      (c = output token counts)
    l_j   <- l_j / r if l_j > 0 else l_j * r   for seen j
    l_j   <- l_j - f c_j - p [c_j > 0]
Given one `token_counts` tensor instead of (prompt_mask, output_counts): c = token_counts, seen_j = c_j > 0.

Masks (torch on the device, sort-based; documented choice: one sort per row is cheap next to the
forward and keeps the semantics exact): temperature divides rows with T > 0; top-k keeps logits >= the
k-th largest (k <= 0: off); top-p keeps the smallest probability-sorted prefix whose mass reaches p;
min-p keeps p_j >= min_p p_max, i.e. l_j >= l_max + ln(min_p), with no softmax.

Gumbel-max: argmax_j(l_j / T + g_j) with g_j = -ln(-ln u_j) is a draw from softmax(l / T). u_j comes from
Philox-4x32 keyed by seeds[s] at counter (j, offsets[s] lo, offsets[s] hi, 0), so a (seed, offset) pair
names one draw: reproducible, independent across offsets, and no host round trip. u takes 24 bits,
u = (r >> 8 + 1/2) 2^-24, so it is never 0 or 1. Rows with T == 0 take argmax(l) (greedy). The vocab is
cut into chunks (programs) whose (best score, index) pairs a second kernel reduces; ties go to the
lowest index.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from rocmforge.kernels.arch import Arch


@triton.jit
def _penalties_kernel(
    logits_ptr, counts_ptr, prompt_ptr, rep_ptr, freq_ptr, pres_ptr,
    stride_l, stride_c, stride_p, V, BLOCK: tl.constexpr, HAS_PROMPT: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    offs = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < V
    lg = tl.load(logits_ptr + row * stride_l + offs, mask=mask, other=0.0)
    c = tl.load(counts_ptr + row * stride_c + offs, mask=mask, other=0).to(tl.float32)
    seen = c > 0
    if HAS_PROMPT:
        seen = seen | (tl.load(prompt_ptr + row * stride_p + offs, mask=mask, other=0) != 0)
    r = tl.load(rep_ptr + row)
    lg = tl.where(seen, tl.where(lg > 0, lg / r, lg * r), lg)
    lg = lg - tl.load(freq_ptr + row) * c - tl.load(pres_ptr + row) * (c > 0).to(tl.float32)
    tl.store(logits_ptr + row * stride_l + offs, lg, mask=mask)


def apply_penalties(logits, counts, repetition, frequency, presence) -> torch.Tensor:
    """logits (S, V) fp32, modified in place and returned; counts = token_counts (S, V) int32 or a
    pair (prompt_mask (S, V) bool, output_counts (S, V) int32); repetition/frequency/presence (S,) fp32."""
    prompt, counts = counts if isinstance(counts, tuple) else (None, counts)
    S, V = logits.shape
    assert logits.dtype == torch.float32 and logits.stride(1) == 1, "logits must be (S, V) fp32"
    assert counts.shape == (S, V) and counts.dtype == torch.int32 and counts.stride(1) == 1
    for name, t in (("repetition", repetition), ("frequency", frequency), ("presence", presence)):
        assert t.shape == (S,) and t.dtype == torch.float32, f"{name} must be (S,) fp32"
    if prompt is not None:
        assert prompt.shape == (S, V) and prompt.dtype == torch.bool and prompt.stride(1) == 1
        prompt = prompt.view(torch.int8)
    block = min(4096, triton.next_power_of_2(V))
    if S > 0:
        p = prompt if prompt is not None else counts
        _penalties_kernel[(S, triton.cdiv(V, block))](
            logits, counts, p, repetition, frequency, presence,
            logits.stride(0), counts.stride(0), p.stride(0), V, BLOCK=block, HAS_PROMPT=prompt is not None,
            num_warps=4,
        )
    return logits


def apply_temperature(logits: torch.Tensor, temperatures: torch.Tensor) -> torch.Tensor:
    """(S, V) / T per row for T > 0; rows with T == 0 (greedy) unchanged. Returns a new tensor."""
    t = temperatures.to(logits.dtype)[:, None]
    return torch.where(t > 0, logits / torch.where(t > 0, t, 1.0), logits)


def apply_top_k_top_p_min_p(logits, top_k, top_p, min_p) -> torch.Tensor:
    """logits (S, V) fp32; top_k (S,) int (<= 0 off), top_p (S,) fp32 (1 off), min_p (S,) fp32 (0 off).
    Masked logits become -inf; returns a new tensor."""
    S, V = logits.shape
    srt, idx = torch.sort(logits, dim=-1, descending=True)  # (S, V)
    k = torch.where((top_k > 0) & (top_k < V), top_k, V).long()
    kth = srt.gather(1, (k - 1)[:, None])  # (S, 1)
    srt = srt.masked_fill(srt < kth, -math.inf)
    probs = torch.softmax(srt, dim=-1)
    mass_before = torch.cumsum(probs, dim=-1) - probs
    tp = top_p.to(probs.dtype)[:, None]
    srt = srt.masked_fill((mass_before >= tp) & (tp < 1), -math.inf)
    srt = srt.masked_fill(srt < srt[:, :1] + torch.log(min_p.to(srt.dtype))[:, None], -math.inf)
    return torch.empty_like(logits).scatter_(1, idx, srt)


@triton.jit
def _gumbel_chunk_kernel(
    logits_ptr, temp_ptr, seed_ptr, offset_ptr, best_ptr, best_idx_ptr,
    stride_l, V, CHUNK, NUM_CHUNKS, BLOCK: tl.constexpr,
):
    row = tl.program_id(0)
    chunk = tl.program_id(1)
    t = tl.load(temp_ptr + row)
    seed = tl.load(seed_ptr + row)
    off = tl.load(offset_ptr + row)
    inv_t = 1.0 / tl.where(t > 0, t, 1.0)
    c1 = tl.full([BLOCK], 0, tl.int64) + (off & 0xFFFFFFFF)
    c2 = tl.full([BLOCK], 0, tl.int64) + ((off >> 32) & 0xFFFFFFFF)
    c1 = c1.to(tl.uint32)
    c2 = c2.to(tl.uint32)
    c3 = tl.zeros([BLOCK], tl.uint32)
    best = tl.full([BLOCK], float("-inf"), tl.float32)
    best_idx = tl.full([BLOCK], 2147483647, tl.int32)
    start = chunk * CHUNK
    for n0 in range(start, tl.minimum(start + CHUNK, V), BLOCK):
        offs = n0 + tl.arange(0, BLOCK)
        mask = offs < V
        lg = tl.load(logits_ptr + row.to(tl.int64) * stride_l + offs, mask=mask, other=float("-inf"))
        r0, _, _, _ = tl.philox(seed, offs.to(tl.uint32), c1, c2, c3)
        u = ((r0 >> 8).to(tl.float32) + 0.5) * 5.9604644775390625e-08  # 2^-24
        score = tl.where(t > 0, lg * inv_t - tl.log(-tl.log(u)), lg)
        score = tl.where(mask, score, float("-inf"))
        better = score > best  # strict: earlier index keeps ties
        best_idx = tl.where(better, offs, best_idx)
        best = tl.where(better, score, best)
    m = tl.max(best, 0)
    idx = tl.min(tl.where(best == m, best_idx, 2147483647), 0)
    tl.store(best_ptr + row * NUM_CHUNKS + chunk, m)
    tl.store(best_idx_ptr + row * NUM_CHUNKS + chunk, idx)


@triton.jit
def _gumbel_reduce_kernel(best_ptr, best_idx_ptr, out_ptr, NUM_CHUNKS, CHUNKS_PAD: tl.constexpr):
    row = tl.program_id(0)
    offs = tl.arange(0, CHUNKS_PAD)
    mask = offs < NUM_CHUNKS
    b = tl.load(best_ptr + row * NUM_CHUNKS + offs, mask=mask, other=float("-inf"))
    i = tl.load(best_idx_ptr + row * NUM_CHUNKS + offs, mask=mask, other=2147483647)
    m = tl.max(b, 0)
    idx = tl.min(tl.where(b == m, i, 2147483647), 0)
    idx = tl.where(idx == 2147483647, 0, idx)  # an all -inf row (nothing allowed) draws token 0
    tl.store(out_ptr + row, idx.to(tl.int64))


def sample_gumbel(
    logits: torch.Tensor,  # (S, V) fp32
    temperatures: torch.Tensor,  # (S,) fp32; 0 = greedy
    seeds: torch.Tensor,  # (S,) int64
    offsets: torch.Tensor,  # (S,) int64, e.g. the number of tokens the request has drawn so far
    *,
    chunk: int = 8192,
) -> torch.Tensor:  # (S,) int64 token ids
    """One token per row from softmax(logits / T) (argmax for T == 0); see the module docstring."""
    S, V = logits.shape
    assert logits.dtype == torch.float32 and logits.stride(1) == 1, "logits must be (S, V) fp32"
    assert temperatures.shape == (S,) and temperatures.dtype == torch.float32, "temperatures: (S,) fp32"
    assert seeds.shape == (S,) and seeds.dtype == torch.int64, "seeds: (S,) int64"
    assert offsets.shape == (S,) and offsets.dtype == torch.int64, "offsets: (S,) int64"
    out = torch.empty(S, dtype=torch.int64, device=logits.device)
    if S == 0:
        return out
    n_chunks = triton.cdiv(V, chunk)
    best = torch.empty(S, n_chunks, dtype=torch.float32, device=logits.device)
    best_idx = torch.empty(S, n_chunks, dtype=torch.int32, device=logits.device)
    _gumbel_chunk_kernel[(S, n_chunks)](
        logits, temperatures, seeds, offsets, best, best_idx, logits.stride(0), V, chunk, n_chunks,
        BLOCK=min(1024, triton.next_power_of_2(min(V, chunk))), num_warps=4,
    )
    _gumbel_reduce_kernel[(S,)](best, best_idx, out, n_chunks, CHUNKS_PAD=triton.next_power_of_2(n_chunks),
                                num_warps=1)
    return out


def aot_specs(arch: Arch) -> list[dict]:
    """Penalties with and without a prompt mask; the Gumbel chunk kernel and its reduce (V up to 262144)."""
    specs = []
    for has_prompt in (False, True):
        sig = {"logits_ptr": "*fp32", "counts_ptr": "*i32", "prompt_ptr": "*i8" if has_prompt else "*i32",
               "rep_ptr": "*fp32", "freq_ptr": "*fp32", "pres_ptr": "*fp32",
               "stride_l": "i32", "stride_c": "i32", "stride_p": "i32", "V": "i32",
               "BLOCK": "constexpr", "HAS_PROMPT": "constexpr"}
        name = f"penalties{'_prompt' if has_prompt else ''}"
        specs.append(dict(name=name, fn=_penalties_kernel, signature=sig,
                          constexprs=dict(BLOCK=4096, HAS_PROMPT=has_prompt), num_warps=4, num_stages=1))
    sig = {"logits_ptr": "*fp32", "temp_ptr": "*fp32", "seed_ptr": "*i64", "offset_ptr": "*i64",
           "best_ptr": "*fp32", "best_idx_ptr": "*i32", "stride_l": "i32", "V": "i32", "CHUNK": "i32",
           "NUM_CHUNKS": "i32", "BLOCK": "constexpr"}
    specs.append(dict(name="gumbel_chunk", fn=_gumbel_chunk_kernel, signature=sig,
                      constexprs=dict(BLOCK=1024), num_warps=4, num_stages=1))
    sig = {"best_ptr": "*fp32", "best_idx_ptr": "*i32", "out_ptr": "*i64", "NUM_CHUNKS": "i32",
           "CHUNKS_PAD": "constexpr"}
    specs.append(dict(name="gumbel_reduce", fn=_gumbel_reduce_kernel, signature=sig,
                      constexprs=dict(CHUNKS_PAD=32), num_warps=1, num_stages=1))
    return specs
