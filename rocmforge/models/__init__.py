"""Model registry {architecture: class} and the strict loader.

`load_model` builds the architecture's module tree on the meta device (no memory), then fills it
with the file's tensors dequantized to `dtype`. Module attribute paths are the GGUF tensor names, so
a tensor the model expects but the file lacks, or one the file has but the model does not use, is a
GGUFError naming it: a silent partial load would give a silently wrong model.
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
) -> CausalLM:
    """The model for `config.arch` with every weight from `gguf_file`, in eval mode on `device`."""
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
    weights = {}
    for name, meta_t in expected.items():
        shape = gguf_file.tensors[name].shape
        if tuple(shape) != tuple(meta_t.shape):
            raise GGUFError(f"{gguf_file.path}: tensor {name!r} has shape {tuple(shape)}, the {config.arch} "
                            f"config implies {tuple(meta_t.shape)}")
        weights[name] = gguf_file.load(name).to(device=device, dtype=dtype)
    model.load_state_dict(weights, strict=True, assign=True)
    for p in model.parameters():
        p.requires_grad_(False)
    return model.to(device).eval()


__all__ = ["MODELS", "load_model"]
