"""Attention backends by name: "torch" (reference / CPU) and "triton" (the GPU kernels)."""

from __future__ import annotations

import importlib

from .base import AttentionBackend, AttentionMetadata
from .metadata import build_metadata

# name -> (module, class); imported on first use so a CPU-only install never imports Triton.
_BACKENDS: dict[str, tuple[str, str]] = {
    "torch": ("rocmforge.attention.torch_backend", "TorchAttentionBackend"),
    "triton": ("rocmforge.attention.triton_backend", "TritonAttentionBackend"),
}


def get_backend(name: str) -> AttentionBackend:
    """A new backend instance for `name`; an unknown or not-yet-available name says which exist."""
    if name not in _BACKENDS:
        raise ValueError(f"unknown attention backend {name!r}; available: {', '.join(_BACKENDS)}")
    module, cls = _BACKENDS[name]
    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as e:
        if e.name != module:
            raise
        raise ValueError(f"attention backend {name!r} is not built into this install "
                         f"({module} is missing)") from None
    return getattr(mod, cls)()


__all__ = ["AttentionBackend", "AttentionMetadata", "build_metadata", "get_backend"]
