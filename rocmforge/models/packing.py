"""The packed CPU weights behind `load_model(..., weights="packed")`: fewer bytes per decode step.

A CPU decode step reads every weight once, so its time is about weight bytes / memory bandwidth.
The exact path holds float32 (4 bytes a weight; SmolLM2: 540 MB a step); this one holds

    Q4_0 / Q4_1 / Q4_K weights      Int4Linear, one plane (0.625 bytes a weight), from the GGUF blocks
    Q5_0 / Q5_1 / Q8_0 weights      Int4Linear, two planes (1.25 bytes a weight), from the GGUF blocks
    any other type                  BF16Linear (2 bytes a weight)

for every projection and for the head (`output`, or for a tied file an `output` module built from
token_embd's blocks whose top logits are recomputed from the exact float32 table, `RefinedHead`;
the embedding lookup itself keeps that exact table: it reads T rows a step),
and runs each row of `base.FUSIONS` (q/k/v, gate/up) as one module when its parts are packed the
same way, so one matmul call reads them. See layers/linear.py for the arithmetic and its rounding.
"""

from __future__ import annotations

import torch
from torch import nn

from ..gguf.reader import GGUFFile
from ..layers.linear import INT4_PLANES, BF16Linear, Int4Linear, Linear, int4_fits, int4_parts
from .base import FUSIONS, CausalLM


def _parts(gguf_file: GGUFFile, name: str):
    """(kind, parts) for the tensor `name`: ('int4x1' / 'int4x2', (codes, scale, zero)) for the types
    of INT4_PLANES in shapes the kernel takes, else ('bf16', the dense float32 weight)."""
    info = gguf_file.tensors[name]
    planes = INT4_PLANES.get(info.qtype_name)
    n_out, k = info.shape
    if planes is None or not int4_fits(n_out, k):
        return "bf16", gguf_file.load(name)
    raw = torch.from_numpy(gguf_file.raw(name).copy()).view(n_out, -1)  # (out, row bytes) uint8
    return f"int4x{planes}", int4_parts(raw, info.qtype_name, n_out, k)


def _bias(gguf_file: GGUFFile, path: str) -> torch.Tensor | None:  # (out,) float32 or None
    name = f"{path}.bias"
    return gguf_file.load(name).float() if name in gguf_file.tensors else None


def _build(kind: str, parts: list, biases: list[torch.Tensor | None]) -> nn.Module:
    """One packed module from the parts of its members, concatenated along the output dim."""
    if all(b is None for b in biases):
        bias = None
    else:
        sizes = [p.shape[0] if kind == "bf16" else p[0].shape[0] for p in parts]
        bias = torch.cat([b if b is not None else torch.zeros(n) for b, n in zip(biases, sizes)])
    if kind.startswith("int4"):
        codes, scale, zero = (torch.cat([p[i] for p in parts]) for i in range(3))
        return Int4Linear(codes, scale, zero, bias, planes=int(kind[-1]))
    return BF16Linear(torch.cat(parts), bias)


def pack_linears(model: CausalLM, gguf_file: GGUFFile) -> set[str]:
    """Replace every `Linear` of `model` (module paths are GGUF tensor names) by a packed module, fusing
    per FUSIONS; returns the GGUF tensor names now held packed (the caller loads the rest)."""
    used: set[str] = set()
    for path, mod in list(model.named_modules()):
        if type(mod) is not Linear:
            continue
        parent_path, _, attr = path.rpartition(".")
        parent = model.get_submodule(parent_path) if parent_path else model
        if any(attr in members for members in FUSIONS.values()) and not hasattr(parent, attr):
            continue  # already fused away
        fused = next((f for f, members in FUSIONS.items() if attr in members and hasattr(parent, f)), None)
        members = FUSIONS[fused] if fused is not None else (attr,)
        paths = [f"{parent_path}.{m}" if parent_path else m for m in members]
        loaded = [_parts(gguf_file, f"{p}.weight") for p in paths]
        biases = [_bias(gguf_file, p) for p in paths]
        kinds = {kind for kind, _ in loaded}
        if fused is not None and len(kinds) == 1:
            setattr(parent, fused, _build(kinds.pop(), [p for _, p in loaded], biases))
            for m in members:
                delattr(parent, m)
        else:  # no fusion row, or parts packed differently: one module each
            for m, (kind, part), b in zip(members, loaded, biases):
                setattr(parent, m, _build(kind, [part], [b]))
        for p in paths:
            used.add(f"{p}.weight")
            if f"{p}.bias" in gguf_file.tensors:
                used.add(f"{p}.bias")
    return used


class RefinedHead(nn.Module):
    """A packed head whose TOP_K best logits per row are recomputed in float32 from the exact table.

    The packed head rounds its outputs to bfloat16, 0.125 apart for logits in [16, 32): near-equal
    candidates tie there and argmax takes the lower token id. Their exact products with the same
    hidden state remove that rounding where greedy and top-k/top-p sampling look; the other logits
    keep the packed head's values.
    """

    TOP_K = 16

    def __init__(self, packed: nn.Module, table: torch.Tensor):  # table (vocab, hidden) float32
        super().__init__()
        self.packed = packed
        self.table = table.detach()  # NOTE: the embedding's own storage, a plain attribute (no copy)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, hidden) -> (N, vocab) float32
        logits = self.packed(x).float()
        idx = logits.topk(self.TOP_K, dim=-1).indices  # (N, k)
        exact = torch.einsum("nd,nkd->nk", x.float(), self.table[idx])  # (N, k)
        return logits.scatter_(1, idx, exact)


def pack_tied_head(model: CausalLM, gguf_file: GGUFFile) -> None:
    """A tied file's head as its own packed `output` module built from token_embd's blocks, refined
    from the exact float32 table the embedding lookup keeps anyway."""
    if model.config.tied_embeddings:
        kind, part = _parts(gguf_file, "token_embd.weight")
        model.output = RefinedHead(_build(kind, [part], [None]), model.token_embd.weight)


__all__ = ["RefinedHead", "pack_linears", "pack_tied_head"]
