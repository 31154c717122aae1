"""`LLM`: the Python API, vLLM-shaped.

    from rocmforge import LLM, SamplingParams
    llm = LLM("smollm2")                                   # a short name or a .gguf path; None = smollm2
    out = llm.generate("The capital of France is", SamplingParams(temperature=0, max_tokens=8))
    print(out[0].outputs[0].text)
    llm.chat([{"role": "user", "content": "Hi!"}])         # the model's own chat template
    for delta in llm.stream("Once upon a time", SamplingParams(max_tokens=32)):
        print(delta, end="", flush=True)

Text prompts are tokenized like llama.cpp (BOS per the file's metadata, special-token text such as
"<|im_start|>" parsed as the special token). Chat prompts are rendered with the file's template and
tokenized without adding BOS again (the template writes any BOS it wants), like transformers'
`apply_chat_template`. A model without a template raises ValueError from `chat`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence

import torch

from .attention.metadata import build_metadata
from .cache.kv_cache import allocate_kv_cache, kv_cache_bytes, kv_tokens_for_budget, resolve_kv_dtype
from .config import ModelConfig
from .engine.llm_engine import EngineConfig, LLMEngine
from .engine.outputs import RequestOutput
from .gguf.chat_template import ChatTemplate
from .gguf.reader import GGUFFile
from .gguf.tokenizer import GGUFTokenizer
from .hub import resolve_model
from .models import load_model
from .sampling_params import SamplingParams

logger = logging.getLogger("rocmforge")

Message = dict[str, str]


def resolve_device(device: str | torch.device) -> torch.device:
    """"auto" -> cuda when torch sees a GPU (ROCm builds included), else cpu."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was asked for but torch sees no GPU; use device='cpu' or 'auto'")
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"device must be 'auto', 'cpu' or 'cuda', got {str(device)!r}")
    return dev


class LLM:
    """One model, its tokenizer and chat template, and a generation engine over a paged KV cache."""

    def __new__(cls, *args, tensor_parallel_size: int = 1, **kwargs):
        if cls is LLM and tensor_parallel_size > 1:  # the model split over N processes (distributed/)
            from .distributed.launch import TensorParallelLLM

            cls = TensorParallelLLM
        return super().__new__(cls)

    def __init__(
        self,
        model: str | None = None,
        *,
        device: str = "auto",
        dtype: torch.dtype | None = None,
        max_model_len: int | None = None,
        seed: int | None = None,
        kv_cache_tokens: int | None = None,
        attention_backend: str | None = None,
        gpu_memory_utilization: float = 0.9,
        quantized_weights: bool | None = None,
        tensor_parallel_size: int = 1,
        enforce_eager: bool = False,
        kv_cache_dtype: str = "auto",
        max_num_seqs: int = 64,
        batch_invariant: bool = False,
    ):
        if tensor_parallel_size != 1:
            raise ValueError(f"tensor_parallel_size must be >= 1, got {tensor_parallel_size}")
        cfg, max_model_len = self._open(model, max_model_len)
        self.model_config, tok = cfg, self.tokenizer
        self.device = resolve_device(device)
        self.dtype = dtype or (torch.float32 if self.device.type == "cpu" else torch.bfloat16)
        self.kv_dtype = resolve_kv_dtype(kv_cache_dtype, self.dtype)
        if attention_backend is None:  # the Triton kernels on a GPU, the torch reference on CPU
            attention_backend = "torch" if self.device.type == "cpu" else "triton"
        logger.info("rocmforge: %s on %s (%s, %s attention)", self.path.name, self.device, self.dtype,
                    attention_backend)  # fmt: skip
        if quantized_weights is None:  # GPU: keep GGUF blocks, fused dequant-matmul kernels
            quantized_weights = self.device.type == "cuda"
        # CPU + quantized_weights: int4-packed / bf16 weights on torch's CPU kernels (models/packing.py)
        weights = "packed" if quantized_weights and self.device.type == "cpu" else "exact"
        self.model = load_model(self.gguf, cfg, device=self.device, dtype=self.dtype,
                                attention_backend=attention_backend, weights=weights)  # fmt: skip
        if quantized_weights and self.device.type == "cuda":
            from .layers.quant_linear import quantize_linears  # imports Triton: GPU installs only

            swapped = quantize_linears(self.model, self.gguf, dtype=self.dtype)
            logger.info("rocmforge: quantized linear layers %s", swapped or "none (no kernel for the types)")
            torch.cuda.empty_cache()  # the dense weights just dropped
        if kv_cache_tokens is None:
            kv_cache_tokens = self._kv_tokens(max_model_len, gpu_memory_utilization)
        # enforce_eager (vLLM's name): no CUDA graphs for decode (engine/cuda_graph.py); batch_invariant:
        # a request's tokens do not depend on the batch it runs in (EngineConfig.batch_invariant; each
        # decode step then costs a step of max_num_seqs rows: set max_num_seqs to the concurrency needed)
        econf = EngineConfig(max_model_len=max_model_len, kv_cache_tokens=kv_cache_tokens,
                             kv_cache_dtype=self.kv_dtype, cuda_graphs=not enforce_eager,
                             max_num_seqs=max_num_seqs, batch_invariant=batch_invariant)  # fmt: skip
        self.engine = LLMEngine(self.model, tok, cfg, econf, device=self.device, dtype=self.dtype, seed=seed)
        self.last_output: RequestOutput | None = None  # set by stream() when a stream completes

    def _open(self, model: str | None, max_model_len: int | None) -> tuple[ModelConfig, int]:
        """The file, its tokenizer and chat template; -> (the model's config, a checked max_model_len)."""
        self.path = resolve_model(model)
        self.gguf = GGUFFile(self.path)
        cfg = ModelConfig.from_gguf(self.gguf)
        md = self.gguf.metadata
        self.tokenizer = GGUFTokenizer.from_metadata(md)
        self.chat_template = ChatTemplate.from_metadata(md)  # None when the file has no template
        max_model_len = cfg.context_length if max_model_len is None else max_model_len
        if not 1 <= max_model_len <= cfg.context_length:
            raise ValueError(f"max_model_len must be between 1 and the model's context "
                             f"({cfg.context_length}), got {max_model_len}")
        return cfg, max_model_len

    def _kv_tokens(self, max_model_len: int, utilization: float) -> int:
        """CPU: max(max_model_len, 16384) (untouched cache pages cost nothing there). GPU: what fits in
        `utilization` of the device after the weights and a warm-up forward's activation peak."""
        if self.device.type != "cuda":
            return max(max_model_len, 16384)
        bs, cfg = 16, self.model_config
        warm = min(max_model_len, 2048)  # the engine's default max_num_batched_tokens
        nb = -(-warm // bs)
        scratch = allocate_kv_cache(cfg, nb, bs, device=self.device, dtype=self.kv_dtype)
        meta = build_metadata([warm], [0], [list(range(nb))], bs, scratch, self.device)
        torch.cuda.reset_peak_memory_stats(self.device)
        with torch.inference_mode():
            self.model(torch.zeros(warm, dtype=torch.int64, device=self.device),
                       torch.arange(warm, device=self.device), meta)
        torch.cuda.synchronize(self.device)
        peak = torch.cuda.max_memory_allocated(self.device)
        del scratch, meta
        torch.cuda.empty_cache()
        act_peak = peak - torch.cuda.memory_allocated(self.device)  # warm-up activations + scratch cache
        act_peak -= kv_cache_bytes(cfg, nb, bs, self.kv_dtype)
        free, total = torch.cuda.mem_get_info(self.device)
        used = (total - free) + max(0, act_peak)  # weights, CUDA context, other processes, activations
        tokens = kv_tokens_for_budget(cfg, bs, self.kv_dtype, total_bytes=total, used_bytes=used,
                                      utilization=utilization)
        if tokens < max_model_len:
            raise ValueError(f"the KV cache fits {tokens} tokens in {utilization:.0%} of the GPU's "
                             f"{total / 2**30:.1f} GiB after the weights, fewer than max_model_len "
                             f"({max_model_len}); lower max_model_len or raise gpu_memory_utilization")
        gib = kv_cache_bytes(cfg, tokens // bs, bs, self.kv_dtype) / 2**30
        logger.info("rocmforge: KV cache %d tokens (%.2f GiB; %.0f%% of %.1f GiB)", tokens, gib,
                    100 * utilization, total / 2**30)
        return tokens

    def close(self) -> None:
        """Release what the LLM holds beyond memory (tensor-parallel workers); a no-op here."""

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def max_model_len(self) -> int:
        return self.engine.config.max_model_len

    # ---- text <-> ids ----------------------------------------------------------------------
    def tokenize(self, text: str, add_special: bool = True, parse_special: bool = True) -> list[int]:
        return self.tokenizer.encode(text, add_special=add_special, parse_special=parse_special)

    def detokenize(self, ids: Sequence[int], skip_special: bool = False) -> str:
        return self.tokenizer.decode(list(ids), skip_special=skip_special)

    def render_chat(self, messages: list[Message], add_generation_prompt: bool = True) -> str:
        if self.chat_template is None:
            raise ValueError(f"{self.path.name} has no chat template (no tokenizer.chat_template in its "
                             f"metadata); use generate() with a raw prompt instead")  # fmt: skip
        return self.chat_template.render(messages, add_generation_prompt=add_generation_prompt)

    # ---- generation ------------------------------------------------------------------------
    def generate(
        self,
        prompts: str | list[str] | list[int] | list[list[int]],
        params: SamplingParams | list[SamplingParams] | None = None,
    ) -> list[RequestOutput]:
        """One RequestOutput per prompt, in order; all prompts run together (batched decode)."""
        items = self._prompts(prompts)
        return self._run(items, self._params(params, len(items)))

    def chat(
        self,
        messages: list[Message] | list[list[Message]],
        params: SamplingParams | list[SamplingParams] | None = None,
        add_generation_prompt: bool = True,
    ) -> list[RequestOutput]:
        """Apply the chat template to one conversation (a list of {role, content}) or to several."""
        convs = [messages] if messages and isinstance(messages[0], dict) else messages
        items = []
        for conv in convs:
            text = self.render_chat(conv, add_generation_prompt)
            items.append((text, self.tokenize(text, add_special=False)))
        return self._run(items, self._params(params, len(items)))

    def stream(self, prompt: str | list[int], params: SamplingParams | None = None) -> Iterator[str]:
        """Yield text deltas of one completion as they are generated (n must be 1)."""
        (text, ids), = self._prompts(prompt if isinstance(prompt, str) else [prompt])
        params = params or SamplingParams()
        if params.n != 1:
            raise ValueError(f"stream() generates one sequence; got SamplingParams.n={params.n}")
        rid = self.engine.add_request(ids, params, prompt=text)
        try:
            for _ in self.engine.run([rid]):
                if d := self.engine.delta(rid):
                    yield d
            if d := self.engine.delta(rid):
                yield d
            self.last_output = self.engine.output(rid)
        finally:
            self.engine.abort(rid)

    def stream_chat(self, messages: list[Message], params: SamplingParams | None = None) -> Iterator[str]:
        """stream() for one conversation rendered with the chat template."""
        text = self.render_chat(messages)
        ids = self.tokenize(text, add_special=False)
        yield from self.stream(ids, params)

    # ---- helpers ---------------------------------------------------------------------------
    def _prompts(self, prompts) -> list[tuple[str | None, list[int]]]:
        if isinstance(prompts, str):
            prompts = [prompts]
        elif prompts and all(isinstance(t, int) for t in prompts):
            prompts = [list(prompts)]
        if not isinstance(prompts, list | tuple) or not prompts:
            raise ValueError("prompts must be a string, a list of strings, or a list of token id lists")
        out = []
        for p in prompts:
            if isinstance(p, str):
                out.append((p, self.tokenize(p)))
            elif isinstance(p, list | tuple) and all(isinstance(t, int) for t in p):
                out.append((None, list(p)))
            else:
                raise ValueError(f"a prompt must be a string or a list of token ids, got {type(p).__name__}")
        return out

    @staticmethod
    def _params(params, n: int) -> list[SamplingParams]:
        if params is None:
            return [SamplingParams()] * n
        if isinstance(params, SamplingParams):
            return [params] * n
        if len(params) != n:
            raise ValueError(f"got {len(params)} SamplingParams for {n} prompts; give one, or one per prompt")
        return list(params)

    def _run(self, items, params: list[SamplingParams]) -> list[RequestOutput]:
        for (_, ids), sp in zip(items, params):  # validate everything before queueing anything
            self.engine.check_prompt(ids)
            sp.check_vocab(self.model_config.vocab_size)
        rids = [self.engine.add_request(ids, sp, prompt=text) for (text, ids), sp in zip(items, params)]
        try:
            for _ in self.engine.run(rids):
                pass
            return [self.engine.output(r) for r in rids]
        finally:
            for r in rids:
                self.engine.abort(r)
