"""What hardware a kernel is being configured for.

Every kernel file picks its block sizes from an `Arch` (never from a device name substring): the
wavefront width (64 on AMD CDNA, 32 on AMD RDNA and NVIDIA), the LDS/shared-memory budget and the
matrix-core generation decide what fits. `current_arch()` reads the live device; `arch_of_target()`
maps a `triton.backends.compiler.GPUTarget` so the ahead-of-time check (`aot.py`) configures each
kernel exactly as it would be configured on that hardware.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass


@dataclass(frozen=True)
class Arch:
    backend: str  # "cuda" | "hip" | "cpu" (interpreter)
    name: str  # "sm90", "sm80", "gfx942", "gfx90a", "gfx1100", "cpu"
    warp_size: int  # threads per warp / wavefront: 32 or 64
    shared_bytes: int  # shared memory (NVIDIA) / LDS (AMD) per program we may plan for

    @property
    def is_cdna(self) -> bool:
        return self.backend == "hip" and self.name.startswith("gfx9")

    @property
    def is_rdna(self) -> bool:
        return self.backend == "hip" and self.name.startswith("gfx1")

    @property
    def is_hopper(self) -> bool:
        return self.backend == "cuda" and self.name == "sm90"


_SHARED = {
    "sm90": 227 * 1024,
    "sm80": 163 * 1024,
    "gfx942": 64 * 1024,
    "gfx90a": 64 * 1024,
    "gfx1100": 64 * 1024,
}

CPU = Arch("cpu", "cpu", 32, 64 * 1024)


def make_arch(backend: str, arch: str | int, warp_size: int) -> Arch:
    name = f"sm{arch}" if backend == "cuda" else str(arch)
    return Arch(backend, name, warp_size, _SHARED.get(name, 48 * 1024))


def arch_of_target(target) -> Arch:
    """`GPUTarget("hip", "gfx942", 64)` / `GPUTarget("cuda", 90, 32)` -> Arch."""
    return make_arch(target.backend, target.arch, target.warp_size)


def current_arch(device=None) -> Arch:
    """The Arch of the live torch device; CPU (interpreter) when there is none. Cached per device
    index: every kernel launch asks, and the properties never change."""
    import torch

    if not torch.cuda.is_available():
        return CPU
    return _arch_of_index(torch.cuda._get_device_index(device, optional=True))


@functools.lru_cache(maxsize=16)
def _arch_of_index(index: int) -> Arch:
    import torch

    props = torch.cuda.get_device_properties(index)
    if getattr(torch.version, "hip", None):
        return make_arch("hip", props.gcnArchName.split(":")[0], 64 if "gfx9" in props.gcnArchName else 32)
    return make_arch("cuda", props.major * 10 + props.minor, 32)


@functools.lru_cache(maxsize=8)
def sm_count(device) -> int:
    """SMs (NVIDIA) / CUs (AMD) of a torch device; 4 on CPU, so the interpreter exercises split-K."""
    import torch

    device = torch.device(device)
    if device.type != "cuda":
        return 4
    return torch.cuda.get_device_properties(device).multi_processor_count
