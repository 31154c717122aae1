"""GGUF block layouts shared by the dequant and quant-matmul kernels, and the exact load-time split.

A GGUF weight of torch shape (N, K) is stored as N rows of K / BS blocks of TS bytes each (ggml's
layout, as in gguf-py's `gguf/quants.py`). Inside a block the fp16 scales sit next to the quant
bytes, so a row of Q4_0 blocks (18 bytes) has no 16-byte aligned runs of quants. `split_planes`
moves the same bytes into separate row-major planes, a pure byte shuffle (lossless, same total size):

    q  (N, K * QBITS / 8) uint8   the low 4 bits (Q4_*, Q5_*, Q*_K) or the int8 quants (Q8_0)
    h  high bits: Q5_0/Q5_1 (N, K / 32) int32 (the block's qh word), Q5_K (N, K / 8), Q6_K (N, K / 4) uint8
    d  (N, K / BS) fp16            the block (or super-block) scale d
    m  (N, K / BS) fp16            Q4_1/Q5_1 min m, Q4_K/Q5_K super-block dmin
    sc Q4_K/Q5_K (N, K / 256 * 12) uint8 packed 6-bit scales/mins; Q6_K (N, K / 16) int8 scales

The kernels walk a row in *groups* of G quant bytes (one byte plane position p per group lane).
Each group feeds two *planes* r in {0, 1} (low / high nibble, or the two halves of a Q8_0 block),
and element (group gg, plane r, lane i) is column

    k = gg * 2G + r * G + i                       (G = 16 for 32-blocks, 32 for Q4_K/Q5_K, 64 for Q6_K)

which is exactly where ggml puts that nibble. So a tile of NG groups covers 2 * NG * G columns.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

# name -> (ggml type id, elements per block BS, bytes per block TS, bytes per group lane G)
QTYPES: dict[str, tuple[int, int, int, int]] = {
    "Q4_0": (2, 32, 18, 16),
    "Q4_1": (3, 32, 20, 16),
    "Q5_0": (6, 32, 22, 16),
    "Q5_1": (7, 32, 24, 16),
    "Q8_0": (8, 32, 34, 16),
    "Q4_K": (12, 256, 144, 32),
    "Q5_K": (13, 256, 176, 32),
    "Q6_K": (14, 256, 210, 64),
}
# constexpr QTYPE codes used inside the kernels (the ggml type ids)
Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K, Q6_K = (QTYPES[n][0] for n in QTYPES)
QTYPE_NAMES = tuple(QTYPES)


def qtype_code(qtype: str) -> int:
    if qtype not in QTYPES:
        raise ValueError(f"quant type {qtype!r} has no GPU kernel; supported: {', '.join(QTYPE_NAMES)}")
    return QTYPES[qtype][0]


def block_size(qtype: str) -> int:
    qtype_code(qtype)
    return QTYPES[qtype][1]


def type_size(qtype: str) -> int:
    qtype_code(qtype)
    return QTYPES[qtype][2]


def group_bytes(qtype: str) -> int:
    """G: quant bytes per group; a group covers 2G columns."""
    qtype_code(qtype)
    return QTYPES[qtype][3]


def row_bytes(qtype: str, k: int) -> int:
    bs = block_size(qtype)
    if k % bs:
        raise ValueError(f"{qtype} rows need K a multiple of {bs}, got K={k}")
    return k // bs * type_size(qtype)


def plane_dtypes(qtype: str) -> dict[str, str]:
    """Triton pointer types of the five planes (absent planes are passed as a dummy of that type)."""
    h = "*i32" if qtype in ("Q5_0", "Q5_1") else "*u8"
    return {"q_ptr": "*u8", "h_ptr": h, "d_ptr": "*fp16", "m_ptr": "*fp16", "sc_ptr": "*u8"}


@dataclass(frozen=True)
class QuantWeight:
    """One GGUF weight of torch shape (n_out, k), split into planes (see the module docstring)."""

    qtype: str
    n_out: int
    k: int
    q: torch.Tensor  # (n_out, k * qbits / 8) uint8
    h: torch.Tensor | None  # high bits, see above
    d: torch.Tensor  # (n_out, k / BS) fp16
    m: torch.Tensor | None  # (n_out, k / BS) fp16
    sc: torch.Tensor | None  # packed scales, see above

    @property
    def n_groups(self) -> int:
        return self.k // (2 * group_bytes(self.qtype))

    @property
    def nbytes(self) -> int:
        planes = (self.q, self.h, self.d, self.m, self.sc)
        return sum(t.numel() * t.element_size() for t in planes if t is not None)

    def planes(self) -> tuple[torch.Tensor, ...]:
        """(q, h, d, m, sc) with absent planes replaced by a dummy of the right dtype (never read)."""
        h = self.h if self.h is not None else self.q
        m = self.m if self.m is not None else self.d
        sc = self.sc if self.sc is not None else self.q
        return self.q, h, self.d, m, sc


def _bytes(blk: torch.Tensor, lo: int, hi: int, n: int) -> torch.Tensor:
    return blk[:, :, lo:hi].contiguous().reshape(n, -1)  # (n, nb * (hi - lo)) uint8


def _f16(blk: torch.Tensor, lo: int, n: int) -> torch.Tensor:
    return blk[:, :, lo : lo + 2].contiguous().view(torch.float16).reshape(n, -1)  # (n, nb)


def split_planes(raw: torch.Tensor, qtype: str, n_out: int, k: int) -> QuantWeight:
    """Raw GGUF bytes (n_out, row_bytes) uint8, any device -> QuantWeight on that device. Exact."""
    code = qtype_code(qtype)
    rb = row_bytes(qtype, k)
    if raw.dtype != torch.uint8 or raw.numel() != n_out * rb:
        raise ValueError(
            f"{qtype} weight ({n_out}, {k}) needs {n_out * rb} uint8 bytes, "
            f"got {tuple(raw.shape)} {raw.dtype}"
        )
    nb = k // block_size(qtype)
    blk = raw.reshape(n_out, nb, type_size(qtype))  # (N, nb, TS)
    h = m = sc = None
    if code == Q4_0:
        d, q = _f16(blk, 0, n_out), _bytes(blk, 2, 18, n_out)
    elif code == Q4_1:
        d, m, q = _f16(blk, 0, n_out), _f16(blk, 2, n_out), _bytes(blk, 4, 20, n_out)
    elif code == Q5_0:
        d, q = _f16(blk, 0, n_out), _bytes(blk, 6, 22, n_out)
        h = blk[:, :, 2:6].contiguous().view(torch.int32).reshape(n_out, nb)
    elif code == Q5_1:
        d, m, q = _f16(blk, 0, n_out), _f16(blk, 2, n_out), _bytes(blk, 8, 24, n_out)
        h = blk[:, :, 4:8].contiguous().view(torch.int32).reshape(n_out, nb)
    elif code == Q8_0:
        d, q = _f16(blk, 0, n_out), _bytes(blk, 2, 34, n_out)
    elif code == Q4_K:
        d, m = _f16(blk, 0, n_out), _f16(blk, 2, n_out)
        sc, q = _bytes(blk, 4, 16, n_out), _bytes(blk, 16, 144, n_out)
    elif code == Q5_K:
        d, m = _f16(blk, 0, n_out), _f16(blk, 2, n_out)
        sc, h, q = _bytes(blk, 4, 16, n_out), _bytes(blk, 16, 48, n_out), _bytes(blk, 48, 176, n_out)
    else:  # Q6_K
        q, h, sc = _bytes(blk, 0, 128, n_out), _bytes(blk, 128, 192, n_out), _bytes(blk, 192, 208, n_out)
        d = _f16(blk, 208, n_out)
    return QuantWeight(qtype, n_out, k, q, h, d, m, sc)


def random_blocks(qtype: str, n_out: int, k: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Random valid GGUF bytes (n_out, row_bytes) uint8 on the CPU: random quants, fp16 scales in
    [2^-10, 2^-6) (positive and negative), so every element is finite. For benchmarks and tests
    of formats gguf-py cannot quantize (the K-quants)."""
    rb = row_bytes(qtype, k)
    nb = k // block_size(qtype)
    raw = torch.randint(0, 256, (n_out, nb, type_size(qtype)), dtype=torch.uint8, generator=generator)
    code = qtype_code(qtype)
    offsets = {Q4_1: (0, 2), Q5_1: (0, 2), Q4_K: (0, 2), Q5_K: (0, 2), Q6_K: (208,)}.get(code, (0,))
    for off in offsets:
        mag = torch.rand(n_out, nb, generator=generator) * (2**-6 - 2**-10) + 2**-10
        sign = torch.randint(0, 2, (n_out, nb), generator=generator) * 2 - 1
        f16 = (mag * sign).to(torch.float16).view(torch.uint8).reshape(n_out, nb, 2)
        raw[:, :, off : off + 2] = f16
    return raw.reshape(n_out, rb)
