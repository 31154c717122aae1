"""Model registry {architecture: class} and the strict loader.

`load_model` builds the architecture's module tree on the meta device (no memory), then fills it
with the file's tensors dequantized to `dtype` (weights="exact"), or, on the CPU, with the
projections packed to int4 / bfloat16 from the GGUF blocks (weights="packed", models/packing.py:
about 4x fewer bytes read per decode step, at bfloat16 rounding). Module attribute paths are the
GGUF tensor names, so a tensor the model expects but the file lacks, or one the file has but the
model does not use, is a GGUFError naming it: a silent partial load would give a silently wrong model.
"""

from __future__ import annotations

import torch

from ..attention import get_backend
from ..config import ModelConfig
from ..gguf.errors import GGUFError
from ..gguf.reader import GGUFFile
from .base import CausalLM
from .gemma3 import Gemma3ForCausalLM
from .llama import LlamaForCausalLM
from .packing import pack_linears, pack_tied_head
from .qwen2 import Qwen2ForCausalLM

MODELS: dict[str, type[CausalLM]] = {
    "llama": LlamaForCausalLM,
    "qwen2": Qwen2ForCausalLM,
    "gemma3": Gemma3ForCausalLM,
}


def load_model(
    gguf_file: GGUFFile,
    config: ModelConfig,
    *,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    attention_backend: str = "torch",
    weights: str = "exact",
) -> CausalLM:
    """The model for `config.arch` with every weight from `gguf_file`, in eval mode on `device`.

    weights: "exact" (every tensor dequantized to `dtype`: the reference, what tests compare with HF)
    or "packed" (CPU only; projections and head packed, see models/packing.py; norms, embedding
    table and rope factors still exact in `dtype`)."""
    if weights not in ("exact", "packed"):
        raise ValueError(f"weights must be 'exact' or 'packed', got {weights!r}")
    if weights == "packed" and torch.device(device).type != "cpu":
        raise ValueError(f"weights='packed' runs torch's CPU int4 kernel; device {str(device)!r} is not the "
                         f"CPU (the GPU keeps GGUF blocks through layers/quant_linear.py instead)")
    if config.arch not in MODELS:
        raise GGUFError(f"{gguf_file.path}: no model for architecture {config.arch!r}; "
                        f"supported: {', '.join(MODELS)}")
    backend = get_backend(attention_backend)
    with torch.device("meta"):
        model = MODELS[config.arch](config, backend)
    expected = model.state_dict()  # name -> meta tensor with the expected shape
    missing = [n for n in expected if n not in gguf_file.tensors]
    unexpected = [n for n in gguf_file.tensors if n not in expected]
    if missing:
        raise GGUFError(f"{gguf_file.path}: the {config.arch} model needs tensor {missing[0]!r}, which the "
                        f"file lacks ({len(missing)} missing in all); the file is incomplete or not a "
                        f"{config.arch} model")
    if unexpected:
        raise GGUFError(f"{gguf_file.path}: unexpected tensor {unexpected[0]!r} ({len(unexpected)} in all) "
                        f"that the {config.arch} model does not use; refusing a partial load")
    for name, meta_t in expected.items():
        shape = gguf_file.tensors[name].shape
        if tuple(shape) != tuple(meta_t.shape):
            raise GGUFError(f"{gguf_file.path}: tensor {name!r} has shape {tuple(shape)}, the {config.arch} "
                            f"config implies {tuple(meta_t.shape)}")
    packed = pack_linears(model, gguf_file) if weights == "packed" else set()
    state = {n: gguf_file.load(n).to(device=device, dtype=dtype) for n in expected if n not in packed}
    model.load_state_dict(state, strict=not packed, assign=True)
    if packed:
        pack_tied_head(model, gguf_file)
        left = [n for n, t in model.state_dict().items() if t.is_meta]
        if left:  # a bug in packing.py, not in the file
            raise RuntimeError(f"packed load left {left[:3]} unfilled")
    for p in model.parameters():
        p.requires_grad_(False)
    return model.to(device).eval()


__all__ = ["MODELS", "load_model"]
