"""The GPU layer path (Triton RMSNorm with the residual add, RoPE from the float64 angle table, gated
activations; layers/dispatch.py) against the torch path, on the real models, without a GPU: the same
fp32 model run twice, the second time with the Triton kernels forced under TRITON_INTERPRET=1.

Both paths compute in fp32; they differ by the kernels' reduction order and the RoPE angles (float64
table vs float32 products), so logits agree to ~1e-4: tolerance 2e-3 absolute + 1e-3 relative, and the
greedy tokens must be equal.
"""

import os

import pytest
import torch

from rocmforge.layers.dispatch import forced

pytestmark = pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") != "1",
                                reason="runs the Triton layer kernels on CPU: needs TRITON_INTERPRET=1")

PROMPT = {"smollm2": [1, 504, 3575, 282, 4649, 314], "gemma3": [2, 818, 5279, 529, 7001, 563],
          "qwen2.5-coder": [785, 6722, 315, 9625, 374]}  # fmt: skip


def _counting(monkeypatch, module, name: str, calls: dict) -> None:
    fn = getattr(module, name)

    def wrapped(*args, **kwargs):
        calls[name] = calls.get(name, 0) + 1
        return fn(*args, **kwargs)

    monkeypatch.setattr(module, name, wrapped)


@pytest.mark.parametrize("name", ["smollm2", "gemma3", "qwen2.5-coder"])
def test_triton_layers_match_torch_layers(name, model_store, make_session, monkeypatch):
    from rocmforge.kernels import activations, rmsnorm, rope

    m = model_store.load(name)
    ref_tokens, ref_logits = make_session(m.model, m.config).greedy(0, PROMPT[name], 3)
    calls: dict[str, int] = {}
    act = "gelu_tanh_and_mul" if name == "gemma3" else "silu_and_mul"
    for mod, fn in ((rmsnorm, "rms_norm"), (rope, "apply_rope"), (activations, act)):
        _counting(monkeypatch, mod, fn, calls)
    with forced():
        tokens, logits = make_session(m.model, m.config).greedy(0, PROMPT[name], 3)
    steps, layers = 4, m.config.num_layers  # prefill + 3 decode steps
    assert calls["apply_rope"] == calls[act] == steps * layers, calls
    assert calls["rms_norm"] >= steps * (2 * layers + 1), calls  # gemma3 adds its q/k and post norms
    assert tokens == ref_tokens
    for a, b in zip(ref_logits, logits):
        torch.testing.assert_close(b, a, atol=2e-3, rtol=1e-3)
