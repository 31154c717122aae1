"""Pure-torch twins of `dequant.py` and `quant_matmul.py`, written from ggml's block formats.

Each block of BS elements w[0..BS) is decoded from its raw bytes (no plane split, so this twin
shares no indexing with the kernels):

    Q4_0  w = d * (q - 8)          Q4_1  w = d * q + m           (q: 4 bits, lo nibbles first)
    Q5_0  w = d * (q - 16)         Q5_1  w = d * q + m           (q: 4 low bits | bit j of qh << 4)
    Q8_0  w = d * q                (q: int8)
    Q4_K  w = (d * sc_s) * q - (dmin * m_s)        8 sub-blocks s of 32, 6-bit sc_s / m_s
    Q5_K  same with a 5th bit from qh
    Q6_K  w = (d * sc_s) * (q - 32)                16 sub-blocks of 16, int8 sc_s, 6-bit q

All products are formed in fp32 in gguf-py's order; every product is exact in fp32 (at most
11 + 8 + 6 significant bits), so only the one add of Q4_1/Q5_1/Q4_K/Q5_K rounds.
"""

from __future__ import annotations

import torch

from rocmforge.kernels.quant_layouts import block_size, row_bytes, type_size


def _f16(b: torch.Tensor) -> torch.Tensor:
    return b.contiguous().view(torch.float16).float()  # (nb, 1)


def _nibbles(qs: torch.Tensor) -> torch.Tensor:
    """(nb, n) bytes -> (nb, 2n): all low nibbles, then all high nibbles."""
    return torch.cat([qs & 15, qs >> 4], dim=-1)


def _bits(word: torch.Tensor, n: int) -> torch.Tensor:
    """(nb, 1) int64 -> (nb, n) its low n bits, bit j at column j."""
    return (word >> torch.arange(n, device=word.device)) & 1


def _k_scale_min(s: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(nb, 12) packed 6-bit scales/mins of Q4_K/Q5_K -> (nb, 8) scales, (nb, 8) mins."""
    s = s.to(torch.int64)
    a, b, c = s[:, 0:4], s[:, 4:8], s[:, 8:12]
    sc = torch.cat([a & 63, (c & 15) | ((a >> 6) << 4)], dim=1)
    mn = torch.cat([b & 63, (c >> 4) | ((b >> 6) << 4)], dim=1)
    return sc, mn


def dequantize_ref(raw: torch.Tensor, qtype: str, shape: tuple[int, int]) -> torch.Tensor:
    """raw (N, row_bytes) uint8 -> (N, K) float32, bit-exact with gguf-py's `dequantize`."""
    n, k = shape
    nb = n * k // block_size(qtype)
    blk = raw.reshape(n * row_bytes(qtype, k)).reshape(nb, type_size(qtype))  # (nb, TS)
    if qtype == "Q4_0":
        w = _f16(blk[:, 0:2]) * (_nibbles(blk[:, 2:18]).to(torch.int32) - 8).float()
    elif qtype == "Q4_1":
        w = _f16(blk[:, 0:2]) * _nibbles(blk[:, 4:20]).float() + _f16(blk[:, 2:4])
    elif qtype in ("Q5_0", "Q5_1"):
        off = 2 if qtype == "Q5_0" else 4
        qh = blk[:, off : off + 4].contiguous().view(torch.int32).to(torch.int64) & 0xFFFFFFFF
        q = _nibbles(blk[:, off + 4 : off + 20]).to(torch.int64) | (_bits(qh, 32) << 4)
        if qtype == "Q5_0":
            w = _f16(blk[:, 0:2]) * (q - 16).float()
        else:
            w = _f16(blk[:, 0:2]) * q.float() + _f16(blk[:, 2:4])
    elif qtype == "Q8_0":
        w = _f16(blk[:, 0:2]) * blk[:, 2:34].contiguous().view(torch.int8).float()
    elif qtype in ("Q4_K", "Q5_K"):
        sc, mn = _k_scale_min(blk[:, 4:16])
        dl = (_f16(blk[:, 0:2]) * sc.float())[:, :, None]  # (nb, 8, 1)
        ml = (_f16(blk[:, 2:4]) * mn.float())[:, :, None]
        qoff = 16 if qtype == "Q4_K" else 48
        qs = blk[:, qoff : qoff + 128].reshape(nb, 4, 32)
        q = torch.stack([qs & 15, qs >> 4], dim=2).reshape(nb, 8, 32).to(torch.int64)  # sub-block 2c+r
        if qtype == "Q5_K":
            qh = blk[:, 16:48].to(torch.int64)  # (nb, 32): bit s of byte i is element i of sub-block s
            q = q | (((qh[:, None, :] >> torch.arange(8, device=raw.device)[None, :, None]) & 1) << 4)
        w = (dl * q.float() - ml).reshape(nb, 256)
    elif qtype == "Q6_K":
        ql = blk[:, 0:128].reshape(nb, 2, 64).to(torch.int64)
        qh = blk[:, 128:192].reshape(nb, 2, 32).to(torch.int64)
        lo = torch.stack([ql & 15, ql >> 4], dim=2).reshape(nb, 2, 128)  # element 64r + t of half h
        shift = 2 * torch.arange(4, device=raw.device)[None, None, :, None]
        hi = ((qh[:, :, None, :] >> shift) & 3).reshape(nb, 2, 128)  # element 32j + t of half h
        q = ((lo | (hi << 4)) - 32).reshape(nb, 16, 16).float()
        scales = blk[:, 192:208].contiguous().view(torch.int8).float()  # (nb, 16)
        w = ((_f16(blk[:, 208:210]) * scales)[:, :, None] * q).reshape(nb, 256)
    else:
        raise ValueError(f"no reference dequant for {qtype!r}")
    return w.reshape(n, k)


def quant_matmul_ref(x: torch.Tensor, raw: torch.Tensor, qtype: str, n_out: int) -> torch.Tensor:
    """x (M, K) any float dtype, raw (N, row_bytes) -> (M, N) float64: the exact product of the
    (exactly dequantized) weight with x, the target for the fp32-accumulating kernels."""
    w = dequantize_ref(raw, qtype, (n_out, x.shape[1]))  # (N, K) fp32
    return x.double() @ w.double().T


def quantize_act_ref(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Twin of quantize_act.quantize_act, bit-exact: x (M, K) -> xq (M, K) int8, xd (M, K/32),
    xs (M, K/16) fp32 (per 32-group scale amax/127; xs = xd · Σ xq over each 16-element half)."""
    m, k = x.shape
    g = x.float().reshape(m, k // 32, 32)  # (M, G, 32)
    amax = g.abs().amax(-1)  # (M, G)
    # NOTE: tensor / tensor: torch computes `127.0 / t` as a reciprocal times 127 (not IEEE-rounded)
    inv = torch.where(amax > 0, torch.full_like(amax, 127.0) / torch.where(amax > 0, amax, 1.0), 0.0)
    rint = 12582912.0  # 1.5 * 2^23: (v + rint) - rint rounds half to even
    q = ((g * inv[..., None] + rint) - rint).clamp(-127.0, 127.0)
    d = amax / torch.full_like(amax, 127.0)
    xs = d[..., None] * q.reshape(m, k // 32, 2, 16).sum(-1)  # (M, G, 2)
    return q.to(torch.int8).reshape(m, k), d, xs.reshape(m, k // 16)


def quant_matmul_i8_ref(x: torch.Tensor, raw: torch.Tensor, qtype: str, n_out: int) -> torch.Tensor:
    """What the integer-dot GEMV computes, in float64: the exact dequantized weight times the
    int8-quantized x (xd · xq, quantize_act_ref), so only its fp32 summation order differs."""
    xq, xd, _ = quantize_act_ref(x)
    m, k = x.shape
    xv = (xq.double().reshape(m, k // 32, 32) * xd.double()[..., None]).reshape(m, k)
    w = dequantize_ref(raw, qtype, (n_out, k))
    return xv @ w.double().T
