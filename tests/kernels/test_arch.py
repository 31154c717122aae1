"""kernels/arch.current_arch: read once per device, then cached (every kernel launch asks)."""

from types import SimpleNamespace

import torch

from rocmforge.kernels import arch


def test_current_arch_reads_device_properties_once_per_device(monkeypatch):
    calls = []

    def props(index):
        calls.append(index)
        return SimpleNamespace(major=9, minor=0, gcnArchName="")

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_properties", props)
    monkeypatch.setattr(torch.version, "hip", None)
    arch._arch_of_index.cache_clear()
    try:
        for _ in range(3):
            assert arch.current_arch(torch.device("cuda", 1)) == arch.make_arch("cuda", 90, 32)
        assert arch.current_arch("cuda:2").name == "sm90"
        assert calls == [1, 2]
    finally:
        arch._arch_of_index.cache_clear()  # the fake properties must not outlive the test
