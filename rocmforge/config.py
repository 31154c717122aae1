"""Frozen configuration dataclasses. `ModelConfig.from_gguf` is the only reader of model metadata.

Every model hyper-parameter comes from the GGUF metadata (`{arch}.*` keys, llama.cpp's names), with
llama.cpp's per-architecture defaults where the converter writes nothing (Gemma 3's local RoPE
base 10000 and its 5-local-1-global layer pattern). A missing required key is a GGUFError naming it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from .gguf.errors import GGUFError
from .gguf.reader import GGUFFile

SUPPORTED_ARCHS = ("llama", "qwen2", "gemma3")

# RoPE pair layout per architecture. llama.cpp's converter permutes llama's Q/K rows so that the
# rotated pairs are adjacent (x[2i], x[2i+1]): "normal". Qwen2 and Gemma 3 keep HF's rotate-half
# layout, pairs (x[i], x[i + d/2]): "neox".
_ROPE_NEOX = {"llama": False, "qwen2": True, "gemma3": True}

# Gemma 3 defaults that llama.cpp hard-codes (llama-model.cpp, LLM_ARCH_GEMMA3) when the file has
# no key for them: local (sliding-window) layers use RoPE base 10000, and every 6th layer is global.
_GEMMA3_LOCAL_ROPE_BASE = 10_000.0
_GEMMA3_SWA_PATTERN = 6


@dataclass(frozen=True)
class RopeScaling:
    """Context-extension scaling of the RoPE frequencies (`{arch}.rope.scaling.*`).

    linear: theta_i / factor.  yarn: NTK-by-parts blend between theta_i and theta_i / factor over the
    band set by beta_fast/beta_slow, cos/sin multiplied by attn_factor. llama3 is not a type here: its
    per-frequency divisors ship as the `rope_freqs.weight` tensor (ModelConfig.rope_freq_factors).
    """

    type: str  # "linear" | "yarn"
    factor: float
    original_context: int | None = None  # training context before extension
    attn_factor: float = 1.0  # yarn: total multiplier on cos/sin (file's attn_factor x mscale)
    beta_fast: float = 32.0  # yarn: rotations above which theta is kept as is
    beta_slow: float = 1.0  # yarn: rotations below which theta is fully interpolated


@dataclass(frozen=True)
class ModelConfig:
    arch: str  # general.architecture: llama | qwen2 | gemma3
    context_length: int  # trained context, tokens
    hidden_size: int  # embedding width
    num_layers: int
    num_heads: int  # query heads
    num_kv_heads: int
    head_dim: int  # key/query head width
    v_head_dim: int  # value head width
    ffn_size: int
    vocab_size: int
    rms_eps: float
    rope_base: float  # theta base for global (or all) layers
    rope_dim: int  # leading head dims that are rotated (<= head_dim)
    rope_neox: bool  # True: pairs (i, i + d/2); False: pairs (2i, 2i+1)
    rope_scaling: RopeScaling | None
    rope_freq_factors: bool  # the file has `rope_freqs.weight` (llama3-style per-frequency divisors)
    rope_local_base: float | None  # theta base of sliding-window layers (None = rope_base)
    sliding_window: int | None  # W keys including the query itself, on sliding layers
    layer_sliding: tuple[bool, ...]  # per layer: uses the sliding window
    attn_scale: float  # softmax scale on q.k
    embed_scale: float | None  # Gemma: embeddings multiplied by sqrt(hidden_size)
    attn_softcap: float | None  # scores -> c * tanh(scores / c)
    final_softcap: float | None  # logits -> c * tanh(logits / c)
    tied_embeddings: bool  # no `output.weight`: the LM head is token_embd
    qkv_bias: bool  # attn_q/k/v carry biases (qwen2)

    def layer_window(self, i: int) -> int | None:
        return self.sliding_window if self.layer_sliding[i] else None

    def layer_rope_base(self, i: int) -> float:
        if self.layer_sliding[i] and self.rope_local_base is not None:
            return self.rope_local_base
        return self.rope_base

    @classmethod
    def from_gguf(cls, f: GGUFFile) -> ModelConfig:
        md = f.metadata
        arch = md.get("general.architecture")
        if arch not in SUPPORTED_ARCHS:
            raise GGUFError(f"{f.path}: unsupported architecture {arch!r}; "
                            f"supported: {', '.join(SUPPORTED_ARCHS)}")
        get = _Getter(f, arch)
        width = get.int("embedding_length")
        n_layers = get.int("block_count")
        n_heads = get.int("attention.head_count")
        n_kv = get.int("attention.head_count_kv", default=n_heads)
        if width % n_heads and "attention.key_length" not in get:
            raise GGUFError(f"{f.path}: {arch}.embedding_length {width} is not a multiple of head_count "
                            f"{n_heads} and {arch}.attention.key_length is missing")
        head_dim = get.int("attention.key_length", default=width // n_heads)
        if n_kv < 1 or n_heads % n_kv:
            raise GGUFError(f"{f.path}: head_count {n_heads} is not a multiple of head_count_kv {n_kv}")
        vocab = get.int("vocab_size", default=None)
        if vocab is None:
            tokens = md.get("tokenizer.ggml.tokens")
            if not isinstance(tokens, list):
                raise GGUFError(f"{f.path}: missing metadata '{arch}.vocab_size' and 'tokenizer.ggml.tokens'")
            vocab = len(tokens)
        rope_dim = get.int("rope.dimension_count", default=head_dim)
        if not 0 < rope_dim <= head_dim or rope_dim % 2:
            raise GGUFError(f"{f.path}: {arch}.rope.dimension_count {rope_dim} must be even and <= "
                            f"head dim {head_dim}")

        window = get.int("attention.sliding_window", default=None)
        local_base = None
        layer_sliding = (False,) * n_layers
        if arch == "gemma3":
            if window is None:
                raise GGUFError(f"{f.path}: missing metadata '{arch}.attention.sliding_window'")
            pattern = md.get(f"{arch}.attention.sliding_window_pattern", _GEMMA3_SWA_PATTERN)
            if isinstance(pattern, list) and len(pattern) == n_layers:  # explicit per-layer flags
                layer_sliding = tuple(bool(x) for x in pattern)
            elif isinstance(pattern, int) and not isinstance(pattern, bool) and pattern >= 0:
                # llama.cpp: layer i slides when i % pattern < pattern - 1 (pattern 0: every layer)
                layer_sliding = tuple(pattern == 0 or i % pattern < pattern - 1 for i in range(n_layers))
            else:
                raise GGUFError(f"{f.path}: {arch}.attention.sliding_window_pattern = {pattern!r} is neither "
                                f"an integer period nor {n_layers} per-layer flags")
            local_base = get.float("rope.freq_base_swa", default=_GEMMA3_LOCAL_ROPE_BASE)
        elif window is not None:  # a window on every layer (e.g. Mistral-style llama files)
            layer_sliding = (True,) * n_layers

        return cls(
            arch=arch,
            context_length=get.int("context_length"),
            hidden_size=width,
            num_layers=n_layers,
            num_heads=n_heads,
            num_kv_heads=n_kv,
            head_dim=head_dim,
            v_head_dim=get.int("attention.value_length", default=head_dim),
            ffn_size=get.int("feed_forward_length"),
            vocab_size=vocab,
            rms_eps=get.float("attention.layer_norm_rms_epsilon"),
            rope_base=get.float("rope.freq_base", default=10_000.0),
            rope_dim=rope_dim,
            rope_neox=_ROPE_NEOX[arch],
            rope_scaling=_rope_scaling(get),
            rope_freq_factors="rope_freqs.weight" in f.tensors,
            rope_local_base=local_base,
            sliding_window=window,
            layer_sliding=layer_sliding,
            attn_scale=get.float("attention.scale", default=1.0 / math.sqrt(head_dim)),
            embed_scale=math.sqrt(width) if arch == "gemma3" else None,
            attn_softcap=get.float("attn_logit_softcapping", default=None) or None,
            final_softcap=get.float("final_logit_softcapping", default=None) or None,
            tied_embeddings="output.weight" not in f.tensors,
            qkv_bias="blk.0.attn_q.bias" in f.tensors,
        )


def _rope_scaling(get: _Getter) -> RopeScaling | None:
    kind = get.str("rope.scaling.type", default=None)
    factor = get.float("rope.scaling.factor", default=None)
    if kind is None and factor is None and "rope.scale_linear" in get:  # older files
        kind, factor = "linear", get.float("rope.scale_linear")
    if kind in (None, "none"):
        return None
    if kind not in ("linear", "yarn"):
        raise GGUFError(f"{get.f.path}: rope scaling type {kind!r} is not supported "
                        "(supported: linear, yarn)")
    if factor is None or factor <= 0:
        raise GGUFError(f"{get.f.path}: rope scaling {kind!r} needs a positive "
                        f"'{get.arch}.rope.scaling.factor'")
    orig = get.int("rope.scaling.original_context_length", default=None)
    if kind == "linear":
        return None if factor == 1.0 else RopeScaling("linear", factor, orig)
    if orig is None:
        raise GGUFError(f"{get.f.path}: yarn rope scaling needs "
                        f"'{get.arch}.rope.scaling.original_context_length'")
    # llama.cpp (ggml rope_yarn) multiplies the file's attn_factor by the YaRN magnitude 1 + 0.1 ln(factor).
    mscale = 0.1 * math.log(factor) + 1.0 if factor > 1 else 1.0
    return RopeScaling(
        "yarn", factor, orig,
        attn_factor=get.float("rope.scaling.attn_factor", default=1.0) * mscale,
        beta_fast=get.float("rope.scaling.yarn_beta_fast", default=32.0),
        beta_slow=get.float("rope.scaling.yarn_beta_slow", default=1.0),
    )  # fmt: skip


_REQUIRED = object()


class _Getter:
    """Typed reads of `{arch}.<key>`; a missing required key is a GGUFError naming it."""

    def __init__(self, f: GGUFFile, arch: str):
        self.f, self.arch = f, arch

    def __contains__(self, key: str) -> bool:
        return f"{self.arch}.{key}" in self.f.metadata

    def _raw(self, key: str, default: Any) -> Any:
        full = f"{self.arch}.{key}"
        if full in self.f.metadata:
            return full, self.f.metadata[full]
        if default is _REQUIRED:
            raise GGUFError(f"{self.f.path}: missing metadata {full!r}; the file was not converted for "
                            f"{self.arch} or is incomplete. Re-convert it with a current llama.cpp.")
        return full, default

    def int(self, key: str, default: Any = _REQUIRED) -> Any:
        full, v = self._raw(key, default)
        if isinstance(v, list) and v and all(x == v[0] for x in v):  # per-layer arrays with one value
            v = v[0]
        if v is not None and (isinstance(v, bool) or not isinstance(v, int)):
            raise GGUFError(f"{self.f.path}: metadata {full!r} = {v!r} is not an integer")
        return v

    def float(self, key: str, default: Any = _REQUIRED) -> Any:
        full, v = self._raw(key, default)
        if v is not None and (isinstance(v, bool) or not isinstance(v, int | float)):
            raise GGUFError(f"{self.f.path}: metadata {full!r} = {v!r} is not a number")
        return None if v is None else float(v)

    def str(self, key: str, default: Any = _REQUIRED) -> Any:
        full, v = self._raw(key, default)
        if v is not None and not isinstance(v, str):
            raise GGUFError(f"{self.f.path}: metadata {full!r} = {v!r} is not a string")
        return v
