"""Real models' shapes for synthetic GGUF files, and llama.cpp's rule for which quant type each tensor gets.

A `SyntheticSpec` holds the hyper-parameters of a published model exactly as its GGUF carries them
(layers, widths, heads, kv heads, head dim, ffn, vocab, RoPE base, RMS eps, context). `tensor_plan`
lists every tensor of that model: name, torch-order shape (out, in), GGML type, in llama.cpp's order.

Quant mix (llama.cpp `llama_tensor_get_type`, src/llama-quant.cpp, for the ftypes used here):
    1-D tensors (norms, biases)                       F32
    the LM head: output.weight, or token_embd.weight  Q8_0 if its row length % 256 != 0 or the base type
        when the embeddings are tied (no output)      is Q8_0, else Q6_K
    Q4_K_M: attn_v.weight and ffn_down.weight         Q6_K on layers where use_more_bits(i, n) holds:
                                                      i < n/8 or i >= 7n/8 or (i - n/8) % 3 == 2
                                                      (C integer division), else Q4_K
    every other matrix                                the base type (Q4_K, Q8_0, Q4_1)
    a K-quant on a row length % 256 != 0              llama.cpp's fallback: Q4_K -> Q5_0, Q6_K -> Q8_0
That reproduces the published files' counts: Llama-3-8B Q4_K_M has Q4_K 193, Q6_K 33, F32 65;
Qwen2.5-7B Q4_K_M has Q4_K 169, Q6_K 29, F32 141 (tests/bench/test_synthetic.py checks both).
"""

from __future__ import annotations

from dataclasses import dataclass

QK_K = 256  # elements per K-quant super-block

# llama.cpp's llama_ftype values written to general.file_type
FILE_TYPES = {"Q4_1": 3, "Q8_0": 7, "Q4_K_M": 15}
_BASE = {"Q4_1": "Q4_1", "Q8_0": "Q8_0", "Q4_K_M": "Q4_K"}  # most matrices
_K_FALLBACK = {"Q4_K": "Q5_0", "Q6_K": "Q8_0"}


@dataclass(frozen=True)
class SyntheticSpec:
    name: str  # the --synthetic NAME
    arch: str  # general.architecture: llama | qwen2
    ftype: str  # "Q4_K_M" | "Q8_0" | "Q4_1"
    num_layers: int
    hidden_size: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    ffn_size: int
    vocab_size: int
    rope_base: float
    rms_eps: float
    context_length: int
    tied_embeddings: bool  # no output.weight: token_embd is the LM head
    qkv_bias: bool  # qwen2: attn_q/k/v carry F32 biases

    def with_layers(self, k: int | None) -> SyntheticSpec:
        """The same model truncated to its first k layers (None: all of them)."""
        if k is None or k == self.num_layers:
            return self
        if not 1 <= k <= self.num_layers:
            raise ValueError(f"--synthetic-layers must be between 1 and {self.num_layers} for {self.name}, "
                             f"got {k}")  # fmt: skip
        from dataclasses import replace

        return replace(self, num_layers=k)


SPECS: dict[str, SyntheticSpec] = {
    s.name: s
    for s in (
        # Meta-Llama-3-8B: config.json of meta-llama/Meta-Llama-3-8B
        SyntheticSpec("llama-3-8b-q4_k_m", "llama", "Q4_K_M", num_layers=32, hidden_size=4096, num_heads=32,
                      num_kv_heads=8, head_dim=128, ffn_size=14336, vocab_size=128256, rope_base=500000.0,
                      rms_eps=1e-5, context_length=8192, tied_embeddings=False, qkv_bias=False),
        # Qwen2.5-7B(-Instruct)
        SyntheticSpec("qwen2.5-7b-q4_k_m", "qwen2", "Q4_K_M", num_layers=28, hidden_size=3584, num_heads=28,
                      num_kv_heads=4, head_dim=128, ffn_size=18944, vocab_size=152064, rope_base=1000000.0,
                      rms_eps=1e-6, context_length=32768, tied_embeddings=False, qkv_bias=True),
        # Qwen2.5-0.5B(-Instruct): tied embeddings
        SyntheticSpec("qwen2.5-0.5b-q8_0", "qwen2", "Q8_0", num_layers=24, hidden_size=896, num_heads=14,
                      num_kv_heads=2, head_dim=64, ffn_size=4864, vocab_size=151936, rope_base=1000000.0,
                      rms_eps=1e-6, context_length=32768, tied_embeddings=True, qkv_bias=True),
        # SmolLM2-135M(-Instruct): tied embeddings; as the file rocmforge's hub ships (Q4_1, Q8_0 head)
        SyntheticSpec("smollm2-135m-q4_1", "llama", "Q4_1", num_layers=30, hidden_size=576, num_heads=9,
                      num_kv_heads=3, head_dim=64, ffn_size=1536, vocab_size=49152, rope_base=100000.0,
                      rms_eps=1e-5, context_length=8192, tied_embeddings=True, qkv_bias=False),
    )  # fmt: skip
}


def get_spec(name: str, layers: int | None = None) -> SyntheticSpec:
    if name not in SPECS:
        raise ValueError(f"unknown synthetic model {name!r}; known: {', '.join(SPECS)}")
    return SPECS[name].with_layers(layers)


def use_more_bits(i: int, n: int) -> bool:
    """llama.cpp's layer choice for the extra-precision tensors of the _M mixes (C integer division)."""
    return i < n // 8 or i >= 7 * n // 8 or (i - n // 8) % 3 == 2


def _fallback(qt: str, row_len: int) -> str:
    if qt in _K_FALLBACK and row_len % QK_K:
        return _K_FALLBACK[qt]
    return qt


def quant_type(spec: SyntheticSpec, name: str, shape: tuple[int, ...], layer: int | None) -> str:
    """The GGML type llama.cpp's quantizer gives tensor `name` of torch shape `shape` (module docstring)."""
    if len(shape) == 1:
        return "F32"
    base, row_len = _BASE[spec.ftype], shape[-1]
    is_head = name == "output.weight" or (name == "token_embd.weight" and spec.tied_embeddings)
    if is_head:
        return "Q8_0" if row_len % QK_K or base == "Q8_0" else "Q6_K"
    qt = base
    if spec.ftype == "Q4_K_M" and layer is not None and name.endswith(("attn_v.weight", "ffn_down.weight")):
        if use_more_bits(layer, spec.num_layers):
            qt = "Q6_K"
    return _fallback(qt, row_len)


def tensor_plan(spec: SyntheticSpec) -> list[tuple[str, tuple[int, ...], str]]:
    """[(name, torch shape, GGML type name)] for every tensor, token_embd / output first, then the layers."""
    H, F, V = spec.hidden_size, spec.ffn_size, spec.vocab_size
    q_out, kv_out = spec.num_heads * spec.head_dim, spec.num_kv_heads * spec.head_dim
    shapes: list[tuple[str, tuple[int, ...], int | None]] = [("token_embd.weight", (V, H), None),
                                                            ("output_norm.weight", (H,), None)]  # fmt: skip
    if not spec.tied_embeddings:
        shapes.append(("output.weight", (V, H), None))
    for i in range(spec.num_layers):
        p = f"blk.{i}."
        layer = [("attn_norm.weight", (H,)), ("attn_q.weight", (q_out, H)), ("attn_k.weight", (kv_out, H)),
                 ("attn_v.weight", (kv_out, H)), ("attn_output.weight", (H, q_out)),
                 ("ffn_norm.weight", (H,)), ("ffn_gate.weight", (F, H)), ("ffn_up.weight", (F, H)),
                 ("ffn_down.weight", (H, F))]  # fmt: skip
        if spec.qkv_bias:
            layer += [("attn_q.bias", (q_out,)), ("attn_k.bias", (kv_out,)), ("attn_v.bias", (kv_out,))]
        shapes += [(p + n, s, i) for n, s in layer]
    return [(n, s, quant_type(spec, n, s, i)) for n, s, i in shapes]
