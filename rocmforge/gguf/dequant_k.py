"""The K-quants (256-element super-blocks) and the shared decoding helpers of dequant.py.

Each decoder maps `b` (nb, TS) uint8 to `out` (nb, 256) float32. fp16 super-block scales d, dmin
are widened to fp32 first; sub-block scales are small integers, so `d * sc` is one fp32 product.

    Q2_K  (84 B)   16 sub-blocks of 16: w = (d * sc_s) * q - (dmin * m_s)   q: 2 bits, sc/m: 4 bits
    Q3_K  (110 B)  16 sub-blocks of 16: w = (d * (sc_s - 32)) * q           q: 2 bits + inverted
                   high bit (q = lo - 4 when the hmask bit is 0), sc: 6 bits
    Q4_K  (144 B)   8 sub-blocks of 32: w = (d * sc_s) * q - (dmin * m_s)   q: 4 bits, sc/m: 6 bits
    Q5_K  (176 B)   same, q: 4 bits | 1 high bit from qh
    Q6_K  (210 B)  16 sub-blocks of 16: w = (d * sc_s) * (q - 32)           q: 4 + 2 bits, sc: int8
    Q8_K  (292 B)  w = d * q                 d: fp32, q: int8 (the 16 int16 bsums are not needed)

Bit planes: 2-bit fields ("crumbs") in 32·r bytes hold element h·128 + s·32 + l (shift s ∈ 0..3,
lane l < 32) in bits 2s..2s+1 of byte h·32 + l; a 1-bit plane of 32 bytes holds element s·32 + l
in bit s of byte l; nibbles in 32·c bytes hold element c·64 + k·32 + l in nibble k of byte c·32 + l.

NOTE on speed: torch pays per contiguous inner run, so we never loop over narrow per-block slices
when a whole-block op works: nibbles are split over the whole (nb, TS) array at once, scales are
read as 1-D strided fp16 / int32 columns, and crumbs / bits are expanded by a 256-entry lookup
table (one embedding gather per byte) instead of shift-and-mask over broadcast shapes. Integer
parts are assembled exactly in fp32 (small integers), then scaled in place: q·d == d·q bit for bit.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache

import torch
import torch.nn.functional as F


def f16_col(b: torch.Tensor, col: int) -> torch.Tensor:
    """The fp16 at (even) byte `col` of every block, widened: (nb, TS) uint8 -> (nb, 1) float32.

    Needs an even TS and an even storage offset (dequantize guarantees both): one strided read.
    """
    return b.view(torch.float16)[:, col // 2].float().unsqueeze(1)


@cache
def byte_table(kind: str, device: torch.device) -> torch.Tensor:
    """(256, n) float32: for every byte value v, its n fields in order.

    "bits": the 8 bits (v >> s) & 1; "crumbs": the 4 two-bit fields (v >> 2s) & 3.
    """
    v = torch.arange(256).unsqueeze(1)
    fields = (v >> torch.arange(8)) & 1 if kind == "bits" else (v >> (2 * torch.arange(4))) & 3
    return fields.float().to(device)


def fields(b: torch.Tensor, lo: int, hi: int, kind: str) -> torch.Tensor:
    """Bytes [lo, hi) of every block expanded by byte_table: (nb, hi - lo, n) float32."""
    return F.embedding(b[:, lo:hi].int(), byte_table(kind, b.device))


def nibbles_into(out: torch.Tensor, b: torch.Tensor, lo: int, hi: int, lane: int) -> None:
    """Write the nibbles of bytes [lo, hi) into out as floats: element c·2L + k·L + l = nibble k of
    byte lo + c·L + l, L = lane. out: (nb, 2·(hi - lo)) float32 (a view of the output)."""
    nb, n = b.shape[0], (hi - lo) // lane
    o = out.view(nb, n, 2, lane)
    o[:, :, 0].copy_((b & 15)[:, lo:hi].view(nb, n, lane))
    o[:, :, 1].copy_((b >> 4)[:, lo:hi].view(nb, n, lane))


def _scale_min_k4(b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Bytes 4..16 of Q4_K/Q5_K blocks -> (nb, 8) scales, (nb, 8) mins, as float32.

    Words a = bytes 4-7, m = 8-11, c = 12-15 hold, per byte j < 4: sc_j = a_j & 63, m_j = m_j & 63,
    sc_{4+j} = (c_j & 15) | (a_j >> 6) << 4, m_{4+j} = (c_j >> 4) | (m_j >> 6) << 4. Done on all
    four bytes of each int32 word at once (masks keep every byte's bits in that byte).
    """
    w = b.view(torch.int32)  # (nb, TS / 4)
    a, m, c = w[:, 1], w[:, 2], w[:, 3]
    sc = torch.stack((a & 0x3F3F3F3F, (c & 0x0F0F0F0F) | ((a >> 2) & 0x30303030)), dim=1)
    mn = torch.stack((m & 0x3F3F3F3F, ((c >> 4) & 0x0F0F0F0F) | ((m >> 2) & 0x30303030)), dim=1)
    return sc.view(torch.uint8).float(), mn.view(torch.uint8).float()  # (nb, 8) each


def _q2_k(b: torch.Tensor, out: torch.Tensor) -> None:
    nb = b.shape[0]
    sc = b[:, 0:16]  # (nb, 16): low nibble scale, high nibble min
    dl = (f16_col(b, 80) * (sc & 15).float()).unsqueeze(-1)  # (nb, 16, 1)
    ml = (f16_col(b, 82) * (sc >> 4).float()).unsqueeze(-1)
    out.view(nb, 2, 4, 32).copy_(fields(b, 16, 80, "crumbs").view(nb, 2, 32, 4).transpose(2, 3))
    out.view(nb, 16, 16).mul_(dl).sub_(ml)


def _q3_k(b: torch.Tensor, out: torch.Tensor) -> None:
    nb = b.shape[0]
    lo = b[:, 96:104]  # (nb, 8): low 4 bits of scales 0-7 (low nibble) and 8-15 (high nibble)
    shifts = torch.tensor([0, 2, 4, 6], dtype=torch.uint8, device=b.device).view(1, 4, 1)
    hi = b[:, 104:108].view(nb, 1, 4) >> shifts  # (nb, 4, 4): bits 2s..2s+1 of byte j -> scale 4s + j
    sc = torch.cat((lo & 15, lo >> 4), dim=1) | ((hi.reshape(nb, 16) & 3) << 4)  # (nb, 16), 6 bits
    dl = (f16_col(b, 108) * (sc.to(torch.int8) - 32).float()).unsqueeze(-1)  # (nb, 16, 1)
    out.view(nb, 2, 4, 32).copy_(fields(b, 32, 96, "crumbs").view(nb, 2, 32, 4).transpose(2, 3))
    # q = lo2 - 4·(1 - hbit) = lo2 + 4·hbit - 4: the high bit *clears* the -4 offset
    o = out.view(nb, 8, 32)
    o.add_(fields(b, 0, 32, "bits").transpose(1, 2), alpha=4).sub_(4)
    out.view(nb, 16, 16).mul_(dl)


def _q4_k(b: torch.Tensor, out: torch.Tensor) -> None:
    nb = b.shape[0]
    sc, mn = _scale_min_k4(b)
    ds = (f16_col(b, 0) * sc).unsqueeze(-1)  # (nb, 8, 1)
    dm = (f16_col(b, 2) * mn).unsqueeze(-1)
    nibbles_into(out, b, 16, 144, 32)
    out.view(nb, 8, 32).mul_(ds).sub_(dm)


def _q5_k(b: torch.Tensor, out: torch.Tensor) -> None:
    nb = b.shape[0]
    sc, mn = _scale_min_k4(b)
    ds = (f16_col(b, 0) * sc).unsqueeze(-1)  # (nb, 8, 1)
    dm = (f16_col(b, 2) * mn).unsqueeze(-1)
    nibbles_into(out, b, 48, 176, 32)
    o = out.view(nb, 8, 32)
    o.add_(fields(b, 16, 48, "bits").transpose(1, 2), alpha=16)  # bit s of byte l -> element s·32 + l
    o.mul_(ds).sub_(dm)


def _q6_k(b: torch.Tensor, out: torch.Tensor) -> None:
    nb = b.shape[0]
    ds = (f16_col(b, 208) * b[:, 192:208].view(torch.int8).float()).unsqueeze(-1)  # (nb, 16, 1)
    nibbles_into(out, b, 0, 128, 64)  # low 4 bits: lanes of 64, element h·128 + k·64 + l
    crumbs = fields(b, 128, 192, "crumbs").view(nb, 2, 32, 4).transpose(2, 3)  # (nb, 2, 4, 32)
    out.view(nb, 2, 4, 32).add_(crumbs, alpha=16)
    out.view(nb, 16, 16).sub_(32).mul_(ds)


def _q8_k(b: torch.Tensor, out: torch.Tensor) -> None:
    out.copy_(b[:, 4:260].view(torch.int8))
    out.mul_(b.view(torch.float32)[:, 0:1])  # d: fp32 at byte 0


K_DECODERS: dict[str, Callable[[torch.Tensor, torch.Tensor], None]] = {
    "Q2_K": _q2_k, "Q3_K": _q3_k, "Q4_K": _q4_k, "Q5_K": _q5_k, "Q6_K": _q6_k, "Q8_K": _q8_k,
}  # fmt: skip
