"""Vector decode for the GEMV (quant_gemv.py): int32 quant words -> fp32 lanes, per-vector scales.

A *vector* is 4 consecutive int32 words (16 bytes) of a row's quant plane. `decode_vectors` turns a
(BN rows, NW words) tile into

    lo, hi       4 + 4 (BN, NW) fp32 tensors: byte lane t of the "low" / "high" value word, q − OFF
    s_lo, s_hi   (BN, NV) per-vector scales;  b_lo, b_hi  (BN, NV) per-vector biases (× Σx)
    cols         (NW,) x column of lane 0 of each word (lane t is column cols + t; hi is + hi_off)

Per format (ggml's layouts; w = word of the q plane, bytes are little-endian lanes t = 0..3):

    Q4_0/Q4_1/Q5_*: lo = w & 0x0F0F0F0F, hi = (w >> 4) & 0x0F0F0F0F; one vector = one 32-block
    Q5_0/Q5_1: bit j of the block's qh word is bit 4 of element j: spread 4 bits into byte lanes
               with (b & 0xF) · 0x02040810 & 0x10101010 (the shifted copies cannot overlap)
    Q5_K: bit 2c (lo) / 2c+1 (hi) of qh byte i (chunk c) is bit 4 of element i
    Q8_0: lanes = (w ^ 0x80808080) bytes, OFF = 128 (signed bytes biased to unsigned); no hi
    Q6_K: lo6 = lo nibbles | ((qh << (4 − s)) & 0x30303030), hi6 = hi nibbles | ((qh >> s) & 0x30303030),
          s = 2·(byte-in-half // 32), OFF = 32

`lanes` converts byte lane t exactly: float_bits((v & 0xFF << 8t) | (150 − 8t) << 23) = 2^(23−8t) + b.
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def _field(v, MASK: tl.constexpr, MAGIC: tl.constexpr, LUT: tl.constexpr, ASM: tl.constexpr):
    """float_bits((v & MASK) | MAGIC) (LUT 0xEA), or with the field's top bit flipped (LUT 0x6A, the
    flip bit also set in MAGIC). ASM: one PTX lop3 (ptxas does not fuse a mask and an OR of two
    constants by itself: two LOP3s)."""
    if ASM:
        r = tl.inline_asm_elementwise(
            "lop3.b32 $0, $1, $2, $3, 0xEA;" if LUT == 0xEA else "lop3.b32 $0, $1, $2, $3, 0x6A;",
            "=r,r,r,r", [v, tl.full(v.shape, MASK, tl.int32), tl.full(v.shape, MAGIC, tl.int32)],
            dtype=tl.int32, is_pure=True, pack=1)
    elif LUT == 0xEA:
        r = (v & MASK) | MAGIC
    else:
        r = ((v & MASK) ^ (MAGIC & MASK)) | (MAGIC & ~MASK)
    return r.to(tl.float32, bitcast=True)


@triton.jit
def lanes(v, OFF: tl.constexpr, ASM: tl.constexpr):
    """int32 words, a value < 128 in the low bits of each byte -> 4 fp32 tensors: byte t − OFF, exact."""
    f0 = _field(v, 0x7F, 0x4B000000, 0xEA, ASM) - (8388608.0 + OFF)
    f1 = _field(v, 0x7F00, 0x47000000, 0xEA, ASM) - (32768.0 + OFF)
    f2 = _field(v, 0x7F0000, 0x43000000, 0xEA, ASM) - (128.0 + OFF)
    f3 = _field(v >> 8, 0x7F0000, 0x43000000, 0xEA, ASM) - (128.0 + OFF)
    return f0, f1, f2, f3


@triton.jit
def signed_lanes(v, ASM: tl.constexpr):
    """int32 words of 4 int8 -> 4 fp32 tensors, exact (the sign bit flipped: q + 128 in the mantissa)."""
    u = v >> 16
    f0 = _field(v, 0xFF, 0x4B000080, 0x6A, ASM) - 8388736.0
    f1 = _field(v, 0xFF00, 0x47008000, 0x6A, ASM) - 32896.0
    f2 = _field(u, 0xFF, 0x4B000080, 0x6A, ASM) - 8388736.0
    f3 = _field(u, 0xFF00, 0x47008000, 0x6A, ASM) - 32896.0
    return f0, f1, f2, f3


@triton.jit
def nibble_lanes(w, OFF: tl.constexpr, ASM: tl.constexpr):
    """int32 words of 8 nibbles -> (lo, hi): 4 + 4 fp32 tensors, low / high nibble of byte t − OFF.
    Fields at bits 0..19 are read in place (nibble at bit p: magic exponent 150 − p); the three
    above bit 19 from w >> 12."""
    u = w >> 12
    lo0 = _field(w, 0xF, 0x4B000000, 0xEA, ASM) - (8388608.0 + OFF)
    lo1 = _field(w, 0xF00, 0x47000000, 0xEA, ASM) - (32768.0 + OFF)
    lo2 = _field(w, 0xF0000, 0x43000000, 0xEA, ASM) - (128.0 + OFF)
    lo3 = _field(u, 0xF000, 0x45000000, 0xEA, ASM) - (2048.0 + OFF)
    hi0 = _field(w, 0xF0, 0x49000000, 0xEA, ASM) - (524288.0 + OFF)
    hi1 = _field(w, 0xF000, 0x45000000, 0xEA, ASM) - (2048.0 + OFF)
    hi2 = _field(u, 0xF00, 0x47000000, 0xEA, ASM) - (32768.0 + OFF)
    hi3 = _field(u, 0xF0000, 0x43000000, 0xEA, ASM) - (128.0 + OFF)
    return (lo0, lo1, lo2, lo3), (hi0, hi1, hi2, hi3)


@triton.jit
def _spread4(b):
    """Low 4 bits of b (int32) -> bit 4 of each byte lane (bit t -> bit 8t + 4)."""
    return ((b & 0xF) * 0x02040810) & 0x10101010


@triton.jit
def _mag(i):
    """int32 0 <= i < 2^23 -> fp32, exact, without an int->float conversion."""
    return (i | 0x4B000000).to(tl.float32, bitcast=True) - 8388608.0


@triton.jit
def _k_scales(sc_ptr, base, s, mask):
    """6-bit (scale, min) of Q4_K/Q5_K sub-block s (0..7) from the 12 packed bytes = 3 int32 words
    W0, W1, W2 at sc_ptr + base: s < 4: (W0_s & 63, W1_s & 63); else, with s' = s − 4,
    (W2_s' & 15 | (W0_s' >> 6) << 4, W2_s' >> 4 | (W1_s' >> 6) << 4)  (X_j = byte j of word X)."""
    t = 8 * (s & 3)
    a = tl.load(sc_ptr + base, mask=mask, other=0) >> t
    b = tl.load(sc_ptr + base + 1, mask=mask, other=0) >> t
    c = tl.load(sc_ptr + base + 2, mask=mask, other=0) >> t
    lo = s < 4
    sc = tl.where(lo, a & 63, (c & 15) | ((a >> 2) & 48))
    mn = tl.where(lo, b & 63, ((c >> 4) & 15) | ((b >> 2) & 48))
    return _mag(sc), _mag(mn)


@triton.jit
def decode_vectors(q_ptr, h_ptr, d_ptr, m_ptr, sc_ptr, stride_q, stride_h, stride_d, stride_sc,
                   rows, w0, mask2, maskv, QTYPE: tl.constexpr, NW: tl.constexpr, ASM: tl.constexpr):
    """rows (BN, 1) int64; words [w0, w0 + NW) of each row, w0 a multiple of NW (NW a multiple of 32,
    so no block straddles a step); masks (BN, NW)/(BN, NV). Strides are per row in elements (q, h: int32
    words). Masked lanes decode to finite values whose x is 0, and masked scales to 0.
    NOTE: per-element index math uses only shifts/masks of arange (non-negative, known at compile
    time per register) plus one scalar term, so no signed div/mod sequences reach the inner loop.
    The max_contiguous/max_constancy hints on the high-bit indices keep Triton 3.6 from giving
    those loads their own layout (it then moved x through shared memory: 2× the instructions)."""
    a = tl.arange(0, NW)  # (NW,) word in the step
    va = tl.arange(0, NW // 4)[None, :]  # (1, NV) vector in the step
    v2 = w0 // 4 + va  # (1, NV) vector index in the row
    w = tl.load(q_ptr + rows * stride_q + (w0 + a)[None, :], mask=mask2, other=0)  # (BN, NW) int32, 16 B/lane
    s_lo = tl.zeros(v2.shape, dtype=tl.float32)
    s_hi = s_lo
    b_lo = s_lo
    b_hi = s_lo
    if QTYPE == 8:  # Q8_0: 32-byte block = 2 vectors
        lo = signed_lanes(w, ASM)
        hi = lo
        cols = 4 * (w0 + a)
        s_lo = tl.load(d_ptr + rows * stride_d + w0 // 8 + (va >> 1), mask=maskv, other=0).to(tl.float32)
    elif QTYPE == 14:  # Q6_K: 256-superblock = 32 q words (2 halves of 16), 16 qh words, 16 scales
        hh = (a >> 4) & 1  # half of the superblock
        cols = 8 * w0 + 256 * (a >> 5) + 128 * hh + 4 * (a & 15)
        h_idx = tl.max_contiguous(tl.multiple_of(16 * (a >> 5) + 8 * hh + (a & 7), 4), 4)  # runs of 8 words
        qh = tl.load(h_ptr + rows * stride_h + (w0 // 2 + h_idx)[None, :], mask=mask2, other=0)
        s = (2 * ((a >> 3) & 1))[None, :]
        lo = lanes((w & 0x0F0F0F0F) | ((qh << (4 - s)) & 0x30303030), 32.0, ASM)
        hi = lanes(((w >> 4) & 0x0F0F0F0F) | ((qh >> s) & 0x30303030), 32.0, ASM)
        sbv = w0 // 32 + (va >> 3)
        s_base = sc_ptr + rows * stride_sc + 16 * sbv + 8 * ((va >> 2) & 1) + (va & 3)
        d = tl.load(d_ptr + rows * stride_d + sbv, mask=maskv, other=0).to(tl.float32)
        s_lo = d * tl.load(s_base, mask=maskv, other=0).to(tl.int8, bitcast=True).to(tl.float32)
        s_hi = d * tl.load(s_base + 4, mask=maskv, other=0).to(tl.int8, bitcast=True).to(tl.float32)
    elif QTYPE == 12 or QTYPE == 13:  # Q4_K / Q5_K: 32 q words = 4 chunks c of 8 words
        c = (a >> 3) & 3
        cols = 8 * w0 + 256 * (a >> 5) + 64 * c + 4 * (a & 7)
        if QTYPE == 13:  # qh: 8 words per superblock, bit 2c / 2c + 1 of byte i
            h_idx = tl.max_contiguous(tl.multiple_of(8 * (a >> 5) + (a & 7), 4), 4)
            qh = tl.load(h_ptr + rows * stride_h + (w0 // 4 + h_idx)[None, :], mask=mask2, other=0)
            c2 = (2 * c)[None, :]
            lo = lanes((w & 0x0F0F0F0F) | (((qh >> c2) << 4) & 0x10101010), 0.0, ASM)
            hi = lanes(((w >> 4) & 0x0F0F0F0F) | (((qh >> (c2 + 1)) << 4) & 0x10101010), 0.0, ASM)
        else:
            lo, hi = nibble_lanes(w, 0.0, ASM)
        sbv = w0 // 32 + (va >> 3)
        s0 = ((va >> 1) & 3) * 2
        base = rows * stride_sc + sbv * 3  # the sc plane as int32 words: 3 per superblock
        sc0, mn0 = _k_scales(sc_ptr, base, s0, maskv)
        sc1, mn1 = _k_scales(sc_ptr, base, s0 + 1, maskv)
        d = tl.load(d_ptr + rows * stride_d + sbv, mask=maskv, other=0).to(tl.float32)
        dmin = tl.load(m_ptr + rows * stride_d + sbv, mask=maskv, other=0).to(tl.float32)
        s_lo = d * sc0
        s_hi = d * sc1
        b_lo = -(dmin * mn0)
        b_hi = -(dmin * mn1)
    else:  # 32-blocks with 16 q bytes: one vector per block
        cols = 8 * w0 + 32 * (a >> 2) + 4 * (a & 3)
        OFF: tl.constexpr = 8.0 if QTYPE == 2 else (16.0 if QTYPE == 6 else 0.0)
        if QTYPE == 6 or QTYPE == 7:  # Q5_0 / Q5_1: bit j of the block's qh word -> element j
            # one qh word per vector, loaded per vector and broadcast to its 4 words (NOTE: a
            # per-word gather made Triton 3.6 move x through shared memory)
            qhv = tl.load(h_ptr + rows * stride_h + v2, mask=maskv, other=0)  # (BN, NV)
            qh = tl.reshape(tl.broadcast_to(qhv[:, :, None], (qhv.shape[0], NW // 4, 4)), (qhv.shape[0], NW))
            j0 = (4 * (a & 3))[None, :]
            lo = lanes((w & 0x0F0F0F0F) | _spread4(qh >> j0), OFF, ASM)
            hi = lanes(((w >> 4) & 0x0F0F0F0F) | _spread4(qh >> (j0 + 16)), OFF, ASM)
        else:
            lo, hi = nibble_lanes(w, OFF, ASM)
        s_lo = tl.load(d_ptr + rows * stride_d + v2, mask=maskv, other=0).to(tl.float32)
        s_hi = s_lo
        if QTYPE == 3 or QTYPE == 7:
            b_lo = tl.load(m_ptr + rows * stride_d + v2, mask=maskv, other=0).to(tl.float32)
            b_hi = b_lo
    return lo, hi, s_lo, s_hi, b_lo, b_hi, cols

