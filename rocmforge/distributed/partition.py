"""Which slice of every weight each tensor-parallel rank holds (Megatron-style), as plain data.

Rank r of a world of W holds contiguous ranges, in elements of the GGUF tensor's torch shape:

    attn_q, attn_k, attn_v (+ biases)   rows of its query heads / KV heads       column-parallel
    ffn_gate, ffn_up                    rows [f0, f1) of the FFN                 column-parallel
    attn_output                         columns of its query heads (x Dv)        row-parallel (+ all_reduce)
    ffn_down                            columns [f0, f1)                         row-parallel (+ all_reduce)
    token_embd, output                  rows [v0, v1) of the vocabulary          vocab-parallel

Heads are split by KV-head groups, so every local query head finds its KV head on the same rank:

    Hkv >= W: the KV heads are split into W contiguous ranges as evenly as possible (the first ranks
              take one more), each with its g = Hq / Hkv query heads. SmolLM2 (9 q / 3 kv), W = 2:
              kv {0, 1} + q {0..5} on rank 0, kv {2} + q {6..8} on rank 1.
    Hkv <  W: W must be a multiple of Hkv; each KV head is replicated on W / Hkv ranks that split its
              g query heads (every rank holds one KV head).

Anything else (norms, rope factors, Gemma's per-head QK norms) is replicated.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from ..config import ModelConfig

Range = tuple[int, int]  # [start, end)

# GGUF tensor name suffix -> (sliced dim, which range): the whole weight-sharding table.
_SLICES: dict[str, tuple[int, str]] = {
    "attn_q.weight": (0, "q"), "attn_q.bias": (0, "q"),
    "attn_k.weight": (0, "k"), "attn_k.bias": (0, "k"),
    "attn_v.weight": (0, "v"), "attn_v.bias": (0, "v"),
    "attn_output.weight": (1, "o"),
    "ffn_gate.weight": (0, "ffn"), "ffn_up.weight": (0, "ffn"),
    "ffn_down.weight": (1, "ffn"),
    "token_embd.weight": (0, "vocab"), "output.weight": (0, "vocab"),
}  # fmt: skip
ROW_PARALLEL = ("attn_output", "ffn_down")  # their partial outputs are summed over ranks


def split_even(n: int, parts: int, align: int = 1) -> list[Range]:
    """[0, n) cut into `parts` contiguous non-empty ranges whose bounds are multiples of `align`,
    sizes differing by at most one `align` unit (the first ranges take the extra units)."""
    if parts < 1:
        raise ValueError(f"cannot split into {parts} parts")
    if n % align:
        raise ValueError(f"{n} is not a multiple of the alignment {align}")
    units = n // align
    if units < parts:
        raise ValueError(f"{n} elements in units of {align} cannot be split over {parts} ranks")
    base, extra = divmod(units, parts)
    bounds = [0]
    for i in range(parts):
        bounds.append(bounds[-1] + (base + (i < extra)) * align)
    return list(zip(bounds[:-1], bounds[1:]))


def split_heads(num_heads: int, num_kv_heads: int, world: int) -> list[tuple[Range, Range]]:
    """Per rank ((q0, q1), (kv0, kv1)): its query heads and the KV heads they read (module docstring)."""
    if num_kv_heads < 1 or num_heads % num_kv_heads:
        raise ValueError(f"{num_heads} query heads are not a multiple of {num_kv_heads} KV heads")
    g = num_heads // num_kv_heads
    if num_kv_heads >= world:
        return [((k0 * g, k1 * g), (k0, k1)) for k0, k1 in split_even(num_kv_heads, world)]
    if world % num_kv_heads or g < world // num_kv_heads:
        raise ValueError(
            f"tensor parallel size {world} does not fit {num_heads} query / {num_kv_heads} KV heads: with "
            f"fewer KV heads than ranks the size must be a multiple of {num_kv_heads} and at most "
            f"{num_heads}; use a size <= {num_kv_heads}, or a multiple of it"
        )
    out = []
    for kv in range(num_kv_heads):
        for q0, q1 in split_even(g, world // num_kv_heads):
            out.append(((kv * g + q0, kv * g + q1), (kv, kv + 1)))
    return out


@dataclass(frozen=True)
class TPPlan:
    """One rank's slices of the model (module docstring); build with `TPPlan.make`."""

    rank: int
    world: int
    q_heads: Range  # query heads [q0, q1)
    kv_heads: Range  # KV heads [kv0, kv1)
    ffn: Range  # FFN columns [f0, f1)
    vocab: Range  # vocabulary rows [v0, v1)
    vocab_sizes: tuple[int, ...]  # every rank's vocab slice length, in rank order (for the logits gather)
    head_dim: int  # D of q/k
    v_head_dim: int  # Dv of v

    @classmethod
    def make(cls, config: ModelConfig, rank: int, world: int, *, ffn_align: int = 1) -> TPPlan:
        """ffn_align: FFN bounds in multiples of this (the ffn_down quant block, so the row-parallel
        slice stays whole GGUF blocks: 32 or 256; 1 for float weights)."""
        if not 0 <= rank < world:
            raise ValueError(f"rank {rank} is outside a tensor-parallel world of {world}")
        heads = split_heads(config.num_heads, config.num_kv_heads, world)
        if config.ffn_size % ffn_align or config.ffn_size // ffn_align < world:
            ffn_align = 1
        ffns = split_even(config.ffn_size, world, ffn_align)
        vocabs = split_even(config.vocab_size, world)
        return cls(rank, world, heads[rank][0], heads[rank][1], ffns[rank], vocabs[rank],
                   tuple(b - a for a, b in vocabs), config.head_dim, config.v_head_dim)  # fmt: skip

    @property
    def num_heads(self) -> int:
        return self.q_heads[1] - self.q_heads[0]

    @property
    def num_kv_heads(self) -> int:
        return self.kv_heads[1] - self.kv_heads[0]

    def local_config(self, config: ModelConfig) -> ModelConfig:
        """The config this rank's KV cache and layers see: local head and FFN counts, the full vocab
        (the gathered logits and token-id checks span all of it)."""
        return replace(config, num_heads=self.num_heads, num_kv_heads=self.num_kv_heads,
                       ffn_size=self.ffn[1] - self.ffn[0])  # fmt: skip

    def _range(self, which: str) -> Range:
        (q0, q1), (k0, k1), d, dv = self.q_heads, self.kv_heads, self.head_dim, self.v_head_dim
        return {"q": (q0 * d, q1 * d), "k": (k0 * d, k1 * d), "v": (k0 * dv, k1 * dv),
                "o": (q0 * dv, q1 * dv), "ffn": self.ffn, "vocab": self.vocab}[which]  # fmt: skip

    def param_slice(self, name: str) -> tuple[int, int, int] | None:
        """(dim, start, end) of this rank's slice of GGUF tensor `name`; None = replicated."""
        for suffix, (dim, which) in _SLICES.items():
            if name == suffix or name.endswith("." + suffix):
                return (dim, *self._range(which))
        return None


__all__ = ["ROW_PARALLEL", "TPPlan", "split_even", "split_heads"]
