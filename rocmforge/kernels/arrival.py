"""Arrival counters of the split-K kernels that reduce in place: each split stores its partial, then
bumps its output tile's counter (acq_rel, after a barrier); the split that arrives last sums every
partial in split order and resets the counter to 0. One buffer per device serves them all."""

from __future__ import annotations

import torch

_COUNTERS: dict[str, torch.Tensor] = {}


def split_counters(device, slabs: int) -> torch.Tensor:
    """At least `slabs` zeroed int32 arrival counters on `device`, shared by every kernel that reduces
    split-K in place (quant_gemv.store_rows, paged_decode): launches on one stream never overlap, and
    each leaves its counters at 0.
    NOTE: allocated before any graph capture by the first call; a call with more slabs than ever
    before reallocates (outside capture: the first call of a new shape is an eager warm-up)."""
    key = str(torch.device(device))
    cnt = _COUNTERS.get(key)
    if cnt is None or cnt.numel() < slabs:
        cnt = _COUNTERS[key] = torch.zeros(max(slabs, 1 << 14), dtype=torch.int32, device=device)
    return cnt


__all__ = ["split_counters"]
