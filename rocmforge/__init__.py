"""rocmforge: LLM inference for GGUF models, Triton kernels for ROCm and CUDA, torch on CPU.

Public API: `LLM` and `SamplingParams`. Both load lazily, so `import rocmforge` stays light (no
torch import until one is used).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

__version__ = "0.1.0"
__all__ = ["LLM", "SamplingParams"]

if TYPE_CHECKING:
    from .llm import LLM
    from .sampling_params import SamplingParams


def __getattr__(name: str):
    if name == "LLM":
        from .llm import LLM

        return LLM
    if name == "SamplingParams":
        from .sampling_params import SamplingParams

        return SamplingParams
    raise AttributeError(f"module 'rocmforge' has no attribute {name!r}")
