"""Where a layer's small kernels run: Triton (kernels/rmsnorm.py, rope.py, activations.py) for GPU
tensors, the layer's own torch lines (their twins) elsewhere.

`forced()` makes CPU tensors take the Triton path too; with TRITON_INTERPRET=1 that runs the GPU layer
code on a CPU, which is how tests check it against the torch path without a GPU.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

_forced = False


def triton_layers(t: torch.Tensor) -> bool:
    return t.is_cuda or _forced


@contextmanager
def forced() -> Iterator[None]:
    global _forced
    before, _forced = _forced, True
    try:
        yield
    finally:
        _forced = before
