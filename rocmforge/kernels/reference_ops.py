"""Pure-torch twins of the kernels in paged_decode.py, kv_store.py, rope.py, rmsnorm.py,
activations.py and sampling.py.

Each twin computes the kernel's function the plainest way (per-sequence loops, float32 or float64
math, no fusion), so it doubles as the CPU path and as the reference the kernel tests compare
against. The twins are themselves tested against direct float64 formulas (and HF transformers
where it has the same operation). Shapes match the kernels'; see each kernel file for the math.
"""

from __future__ import annotations

import math

import torch


def paged_decode_attention_ref(
    q: torch.Tensor,  # (S, Hq, D) one query per sequence, at position seq_lens[s] - 1
    k_cache: torch.Tensor,  # (num_blocks, block_size, Hkv, D)
    v_cache: torch.Tensor,  # (num_blocks, block_size, Hkv, D)
    block_tables: torch.Tensor,  # (S, max_blocks) int32
    seq_lens: torch.Tensor,  # (S,) int32
    *,
    scale: float,
    sliding_window: int | None = None,
    softcap: float | None = None,
    compute_dtype: torch.dtype = torch.float32,
) -> torch.Tensor:  # (S, Hq, D) in q.dtype
    """out[s, h] = softmax_j(scale * q[s, h] . k[s, j, h // G]) @ v[s, :, h // G] over the visible j."""
    S, Hq, D = q.shape
    block_size, Hkv = k_cache.shape[1], k_cache.shape[2]
    G = Hq // Hkv
    out = torch.zeros(S, Hq, D, dtype=q.dtype, device=q.device)
    for s in range(S):
        L = int(seq_lens[s])
        if L == 0:
            continue
        pos = torch.arange(L, device=q.device)
        slots = block_tables[s, pos // block_size].long() * block_size + pos % block_size
        k = k_cache.flatten(0, 1)[slots].to(compute_dtype)  # (L, Hkv, D)
        v = v_cache.flatten(0, 1)[slots].to(compute_dtype)
        k = k.repeat_interleave(G, dim=1)  # (L, Hq, D)
        v = v.repeat_interleave(G, dim=1)
        scores = torch.einsum("hd,lhd->hl", q[s].to(compute_dtype), k) * scale  # (Hq, L)
        if softcap is not None:
            scores = softcap * torch.tanh(scores / softcap)
        if sliding_window is not None:
            scores[:, pos <= (L - 1) - sliding_window] = -math.inf
        p = torch.softmax(scores, dim=-1)
        out[s] = torch.einsum("hl,lhd->hd", p, v).to(q.dtype)
    return out


def store_kv_ref(k, v, k_cache, v_cache, slot_mapping) -> None:
    """k_cache.flatten(0, 1)[slot_mapping[t]] = k[t] for every t with slot_mapping[t] >= 0 (in place)."""
    keep = slot_mapping >= 0
    slots = slot_mapping[keep]
    k_cache.view(-1, *k_cache.shape[2:])[slots] = k[keep].to(k_cache.dtype)
    v_cache.view(-1, *v_cache.shape[2:])[slots] = v[keep].to(v_cache.dtype)


def apply_rope_ref(
    q: torch.Tensor,  # (T, Hq, D)
    k: torch.Tensor,  # (T, Hkv, D)
    positions: torch.Tensor,  # (T,) int64
    cos_sin_cache: torch.Tensor,  # (max_pos, rot_dim) fp32: [cos | sin]
    *,
    neox: bool,
    rot_dim: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:  # new (q, k), same dtypes
    """Rotate pairs (x1, x2) -> (x1 cos - x2 sin, x2 cos + x1 sin) over the first rot_dim dims.

    NeoX pairs dim i with i + rot_dim/2 (HF rotate_half); normal/GPT-J pairs 2i with 2i + 1.
    """
    rot_dim = rot_dim or cos_sin_cache.shape[1]
    half = rot_dim // 2
    cs = cos_sin_cache[positions].float()  # (T, rot_dim)
    cos, sin = cs[:, None, :half], cs[:, None, half:rot_dim]  # (T, 1, half)

    def rot(x):
        xf = x.float()
        r = xf[..., :rot_dim]
        if neox:
            x1, x2 = r[..., :half], r[..., half:]
            r = torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)
        else:
            x1, x2 = r[..., 0::2], r[..., 1::2]
            r = torch.stack([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1).flatten(-2)
        return torch.cat([r, xf[..., rot_dim:]], dim=-1).to(x.dtype)

    return rot(q), rot(k)


def rms_norm_ref(x, weight, eps, *, residual=None, add_unit_offset=False):
    """y = h / sqrt(mean(h^2) + eps) * (w or 1 + w), h = x (+ residual, rounded to x.dtype)."""
    h = x if residual is None else (_f(x) + _f(residual)).to(x.dtype)
    hf = _f(h)
    w = _f(weight).to(hf.dtype)
    w = w + 1.0 if add_unit_offset else w
    y = (hf * torch.rsqrt(hf.pow(2).mean(-1, keepdim=True) + eps) * w).to(x.dtype)
    return y if residual is None else (y, h)


def _f(x: torch.Tensor) -> torch.Tensor:
    """fp32 math for fp16/bf16/fp32 inputs; float64 stays float64 (for the twins' own tests)."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


def _split_gate_up(x, up):
    if up is None:
        n = x.shape[-1] // 2
        return x[..., :n], x[..., n:]
    return x, up


def silu_and_mul_ref(x, up=None):
    """silu(gate) * up, gate = x[:, :N], up = x[:, N:] (or separate tensors); fp32 math."""
    g, u = _split_gate_up(x, up)
    return (torch.nn.functional.silu(_f(g)) * _f(u)).to(g.dtype)


def gelu_tanh_and_mul_ref(x, up=None):
    """gelu_tanh(gate) * up with gelu_tanh(a) = a/2 (1 + tanh(sqrt(2/pi) (a + 0.044715 a^3)))."""
    g, u = _split_gate_up(x, up)
    return (torch.nn.functional.gelu(_f(g), approximate="tanh") * _f(u)).to(g.dtype)


def apply_penalties_ref(logits, prompt_mask, output_counts, repetition, frequency, presence):
    """Row s: tokens seen in prompt or output get l/r if l > 0 else l*r (r = repetition[s]); then
    l -= frequency[s] * count_out + presence[s] * (count_out > 0). Returns a new fp32 tensor."""
    out = logits.float().clone()
    for s in range(out.shape[0]):
        seen = prompt_mask[s] | (output_counts[s] > 0)
        r = float(repetition[s])
        row = out[s]
        row[seen] = torch.where(row[seen] > 0, row[seen] / r, row[seen] * r)
        cnt = output_counts[s].float()
        row -= float(frequency[s]) * cnt + float(presence[s]) * (cnt > 0).float()
    return out


def top_k_top_p_min_p_ref(logits, top_k, top_p, min_p):
    """Row by row in float64: keep the top_k largest (k <= 0: all), then the smallest prefix of the
    probability-sorted tokens whose mass reaches top_p, then tokens with p >= min_p * p_max. Masked
    logits become -inf. Returns a new fp32 tensor."""
    out = logits.double().clone()
    V = out.shape[1]
    for s in range(out.shape[0]):
        row = out[s]
        k = int(top_k[s])
        if 0 < k < V:
            kth = torch.sort(row, descending=True).values[k - 1]
            row[row < kth] = -math.inf
        p = torch.softmax(row, -1)
        order = torch.argsort(p, descending=True)
        mass_before = torch.cumsum(p[order], 0) - p[order]
        drop = order[mass_before >= float(top_p[s])]
        row[drop] = -math.inf
        p = torch.softmax(row, -1)
        row[p < float(min_p[s]) * p.max()] = -math.inf
    return out.float()


def sample_gumbel_ref(logits, temperatures, generator: torch.Generator | None = None):
    """argmax(logits / T + g), g ~ Gumbel(0, 1) = -log(Exp(1)); argmax(logits) where T == 0.

    Same distribution as the kernel (softmax(logits / T)) but torch's RNG, not the kernel's Philox
    stream: compare the two statistically, not sample by sample."""
    e = torch.empty_like(logits, dtype=torch.float64).exponential_(generator=generator)
    t = temperatures.double()[:, None]
    noisy = logits.double() / torch.where(t > 0, t, 1.0) - torch.log(e)
    return torch.where(temperatures > 0, noisy.argmax(-1), logits.argmax(-1))
