"""Shared decoder blocks: a pre-norm attention + gated-FFN layer and the causal LM around it.

Attribute names are the GGUF tensor names (`token_embd`, `blk.{i}.attn_q`, `output_norm`, ...), so
`state_dict()` keys are exactly the file's tensor names and loading is a strict name match.

    h = embed(ids)
    per layer:  h = h + attn_output(Attn(rope(attn_q(n)), rope(attn_k(n)), attn_v(n))),  n = attn_norm(h)
                h = h + ffn_down(act(ffn_gate(n)) * ffn_up(n)),                      n = ffn_norm(h)
    logits = output(output_norm(h))           (output = token_embd when the file ties them)

The packed CPU path (models/packing.py) may replace the projections of a layer by one fused module
per row of `FUSIONS` (their weights concatenated along the output dim, so one matmul reads them),
and the head by a packed `output` module; the exact path keeps the separate `Linear`s.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..attention.base import AttentionBackend, AttentionMetadata
from ..config import ModelConfig
from ..layers.attention import PagedAttention
from ..layers.dispatch import triton_layers
from ..layers.embedding import Embedding, Vector
from ..layers.linear import Linear
from ..layers.norm import RMSNorm
from ..layers.rotary import RotaryEmbedding

# Declared fusions (STYLE rule 2): fused module name -> the GGUF projections it concatenates, in order.
FUSIONS: dict[str, tuple[str, ...]] = {
    "attn_qkv": ("attn_q", "attn_k", "attn_v"),
    "attn_qk": ("attn_q", "attn_k"),  # when v alone has another type (Q4_K_M's Q6_K attn_v layers)
    "ffn_gate_up": ("ffn_gate", "ffn_up"),
}


def _qtypes(*modules) -> frozenset[str]:
    """The quant types of the QuantLinears among `modules` (None and dense layers skipped)."""
    return frozenset(m.qweight.qtype for m in modules if getattr(m, "qweight", None) is not None)


class DecoderLayer(nn.Module):
    QKV_BIAS = False  # Qwen2 sets True: attn_q/k/v carry biases

    def __init__(self, config: ModelConfig, layer_idx: int, backend: AttentionBackend):
        super().__init__()
        c = config
        self.num_heads, self.num_kv_heads, self.head_dim = c.num_heads, c.num_kv_heads, c.head_dim
        self.v_head_dim = c.v_head_dim
        self.rope_key = "local" if c.layer_sliding[layer_idx] and c.rope_local_base is not None else "global"
        self.attn_norm = RMSNorm(c.hidden_size, c.rms_eps)
        self.attn_q = Linear(c.hidden_size, c.num_heads * c.head_dim, bias=self.QKV_BIAS)
        self.attn_k = Linear(c.hidden_size, c.num_kv_heads * c.head_dim, bias=self.QKV_BIAS)
        self.attn_v = Linear(c.hidden_size, c.num_kv_heads * c.v_head_dim, bias=self.QKV_BIAS)
        self.attn_output = Linear(c.num_heads * c.v_head_dim, c.hidden_size)
        self.ffn_norm = RMSNorm(c.hidden_size, c.rms_eps)
        self.ffn_gate = Linear(c.hidden_size, c.ffn_size)
        self.ffn_up = Linear(c.hidden_size, c.ffn_size)
        self.ffn_down = Linear(c.ffn_size, c.hidden_size)
        window = c.layer_window(layer_idx)
        self.attn = PagedAttention(layer_idx, backend, scale=c.attn_scale, sliding_window=window,
                                   softcap=c.attn_softcap)  # fmt: skip
        # NOTE: plain attributes (not modules) until the packed path sets them: no state_dict entry.
        self.attn_qkv: nn.Module | None = None  # (T, hidden) -> (T, (Hq + 2 Hkv) * D)
        self.attn_qk: nn.Module | None = None  # (T, hidden) -> (T, (Hq + Hkv) * D), attn_v apart
        self.ffn_gate_up: nn.Module | None = None  # (T, hidden) -> (T, 2 * ffn)

    def qk_norm(self, q: torch.Tensor, k: torch.Tensor):  # (T, Hq, D), (T, Hkv, D): none by default
        return q, k

    GELU = False  # the gated FFN's activation: silu (False) or gelu-tanh (True)
    act_int8_for: frozenset[str] = frozenset()  # ffn_down's quant type, once mark_int8_inputs ran

    def mark_int8_inputs(self) -> None:
        """Tell each kernel that writes a projection's input which quant types read it (the QuantLinears'
        qtypes), so it writes the int8 form exactly when one of them takes the integer-dot GEMV."""
        self.attn_norm.int8_for = _qtypes(self.attn_qkv, self.attn_qk, self.attn_q, self.attn_k, self.attn_v)
        self.ffn_norm.int8_for = _qtypes(self.ffn_gate_up, self.ffn_gate, self.ffn_up)
        self.act_int8_for = _qtypes(self.ffn_down)

    def act_mul(self, gate: torch.Tensor, up: torch.Tensor | None = None) -> torch.Tensor:
        """act(gate) * up (T, ffn); with up None, gate is the fused (T, 2 ffn) gate_up output."""
        if triton_layers(gate):  # one Triton pass (kernels/activations.py)
            from ..kernels.activations import gelu_tanh_and_mul, silu_and_mul

            q8 = False  # also write the int8 form, when ffn_down takes the integer-dot GEMV
            if self.act_int8_for and gate.is_cuda and gate.dim() == 2:
                from ..kernels.quant_matmul import int8_wanted

                n = gate.shape[1] // (2 if up is None else 1)
                q8 = int8_wanted(gate.shape[0], n, gate.dtype, gate.device, self.act_int8_for)
            return (gelu_tanh_and_mul if self.GELU else silu_and_mul)(gate, up, quantize=q8)
        if up is None:
            gate, up = gate.chunk(2, dim=-1)
        act = F.gelu(gate, approximate="tanh") if self.GELU else F.silu(gate)
        return act * up

    def attention(self, x: torch.Tensor, rope: RotaryEmbedding, cos_sin, meta: AttentionMetadata):
        """x (T, hidden) already normed -> (T, hidden)."""
        T = x.shape[0]
        nq, nkv = self.num_heads * self.head_dim, self.num_kv_heads * self.head_dim
        if self.attn_qkv is not None:
            q, k, v = self.attn_qkv(x).split((nq, nkv, self.num_kv_heads * self.v_head_dim), dim=-1)
        elif self.attn_qk is not None:
            (q, k), v = self.attn_qk(x).split((nq, nkv), dim=-1), self.attn_v(x)
        else:
            q, k, v = self.attn_q(x), self.attn_k(x), self.attn_v(x)
        q = q.view(T, self.num_heads, self.head_dim)  # (T, Hq, D)
        k = k.view(T, self.num_kv_heads, self.head_dim)  # (T, Hkv, D)
        v = v.view(T, self.num_kv_heads, self.v_head_dim)  # (T, Hkv, Dv)
        q, k = self.qk_norm(q, k)
        q, k = rope.rotate(q, k, cos_sin)
        o = self.attn(q, k, v, meta)  # (T, Hq, Dv)
        return self.attn_output(o.reshape(T, self.num_heads * self.v_head_dim))

    def ffn(self, x: torch.Tensor) -> torch.Tensor:  # (T, hidden) -> (T, hidden)
        if self.ffn_gate_up is None:
            return self.ffn_down(self.act_mul(self.ffn_gate(x), self.ffn_up(x)))
        return self.ffn_down(self.act_mul(self.ffn_gate_up(x)))

    def forward(self, h: torch.Tensor, rope: RotaryEmbedding, cos_sin, meta: AttentionMetadata,
                residual: torch.Tensor | None = None):  # fmt: skip
        """The residual stream is h + residual (residual None: h alone); returns the pair after this
        layer, so each norm fuses the add before it (RMSNorm.add)."""
        x, residual = self.attn_norm.add(h, residual)
        h = self.attention(x, rope, cos_sin, meta)
        x, residual = self.ffn_norm.add(h, residual)
        return self.ffn(x), residual


class CausalLM(nn.Module):
    """A decoder-only LM over a flat batch: forward(input_ids (T,), positions (T,), meta) -> logits."""

    layer_cls: type[DecoderLayer] = DecoderLayer

    def __init__(self, config: ModelConfig, backend: AttentionBackend):
        super().__init__()
        c = self.config = config
        self.token_embd = Embedding(c.vocab_size, c.hidden_size, scale=c.embed_scale)
        self.blk = nn.ModuleList(self.layer_cls(c, i, backend) for i in range(c.num_layers))
        self.output_norm = RMSNorm(c.hidden_size, c.rms_eps)
        if not c.tied_embeddings:
            self.output = Linear(c.hidden_size, c.vocab_size)
        if c.rope_freq_factors:
            self.rope_freqs = Vector(c.rope_dim // 2)  # llama3: per-frequency divisors
        # NOTE: built on the CPU explicitly: load_model constructs the weights on the meta device.
        ropes = {"global": RotaryEmbedding(c.rope_dim, c.rope_base, neox=c.rope_neox, scaling=c.rope_scaling,
                                           device="cpu")}  # fmt: skip
        if c.rope_local_base is not None:  # local layers: their own base, no context-extension scaling
            ropes["local"] = RotaryEmbedding(c.rope_dim, c.rope_local_base, neox=c.rope_neox, device="cpu")
        self.rope = nn.ModuleDict(ropes)

    def mark_int8_inputs(self) -> None:
        """DecoderLayer.mark_int8_inputs for every layer, and the head's type for the final norm."""
        for layer in self.blk:
            layer.mark_int8_inputs()
        self.output_norm.int8_for = _qtypes(self._modules.get("output"))

    def head_weight(self) -> torch.Tensor:  # (vocab, hidden)
        return self.token_embd.weight if self.config.tied_embeddings else self.output.weight

    def forward(
        self,
        input_ids: torch.Tensor,  # (T,) int64
        positions: torch.Tensor,  # (T,) int64 position of each token in its sequence
        meta: AttentionMetadata,
    ) -> torch.Tensor:  # (N, vocab) float32, N = len(meta.logits_indices) or T
        factors = self.rope_freqs.weight if self.config.rope_freq_factors else None
        cos_sin = {k: r.prepare(positions, factors if k == "global" else None, meta.max_seq_len)
                   for k, r in self.rope.items()}  # fmt: skip
        h, residual = self.token_embd(input_ids), None  # (T, hidden): the stream is h + residual
        for layer in self.blk:
            h, residual = layer(h, self.rope[layer.rope_key], cos_sin[layer.rope_key], meta, residual)
        if meta.logits_indices is not None:  # (N, hidden): the norm and head are per row
            h, residual = h[meta.logits_indices], residual[meta.logits_indices]
        head = self._modules.get("output")  # NOTE: the packed path adds one for tied files too
        x, _ = self.output_norm.add(h, residual)
        logits = (F.linear(x, self.head_weight()) if head is None else head(x)).float()  # (N, vocab)
        if self.config.final_softcap is not None:
            c = self.config.final_softcap
            logits = c * torch.tanh(logits / c)
        return logits
