"""Start N tensor-parallel processes and serve the `LLM` API from rank 0.

    from rocmforge.distributed import TensorParallelLLM
    with TensorParallelLLM("smollm2", tensor_parallel_size=2, device="cpu") as llm:
        out = llm.generate(["Hello"], SamplingParams(temperature=0, max_tokens=16))

The calling process is rank 0: it loads its shard, runs the scheduler, the sampler and the KV cache
of its heads (rocmforge.LLM's engine, model = TPModelProxy). Ranks 1..N-1 are spawned processes
(torch.multiprocessing "spawn"): each joins the group (NCCL on cuda:r, gloo on CPU), loads its shard
of the same GGUF, says ("ready",) over its pipe and replays rank 0's steps (step.py). A worker's
exception comes back over the pipe and is raised by rank 0 with its traceback; every collective
fails after `timeout_s` rather than hang. `close()` (or leaving the `with`) stops the workers.
"""

from __future__ import annotations

import logging
import os
import time
import traceback
from dataclasses import dataclass

import torch
import torch.multiprocessing as mp

from ..config import ModelConfig
from ..engine.llm_engine import EngineConfig
from ..engine.outputs import RequestOutput
from ..gguf.reader import GGUFFile
from ..llm import LLM, resolve_device
from ..sampling_params import SamplingParams
from .parallel_state import destroy_tp_group, free_port, init_tp_group
from .partition import TPPlan
from .step import TPEngine, TPModelProxy, worker_errors, worker_loop
from .tp import ffn_align, load_sharded, quantize_sharded

logger = logging.getLogger("rocmforge")


@dataclass(frozen=True)
class TPSpec:
    """What every rank needs to build its shard (pickled to the spawned workers)."""

    model_path: str
    world: int
    init_method: str  # tcp://127.0.0.1:<free port>
    device_type: str  # "cpu" (gloo) | "cuda" (NCCL, rank r on cuda:r)
    dtype: torch.dtype
    attention_backend: str
    quantized_weights: bool  # GPU: column/row slices kept as GGUF blocks (QuantLinear)
    timeout_s: float  # rendezvous and per-collective timeout
    worker_threads: int  # CPU: torch threads per worker process


def build_rank(spec: TPSpec, rank: int):
    """Join the group and load this rank's shard -> (full config, plan, group, TPCausalLM)."""
    group = init_tp_group(rank, spec.world, spec.init_method, device_type=spec.device_type,
                          timeout_s=spec.timeout_s)  # fmt: skip
    f = GGUFFile(spec.model_path)
    cfg = ModelConfig.from_gguf(f)
    plan = TPPlan.make(cfg, rank, spec.world, ffn_align=ffn_align(f, cfg))
    model = load_sharded(f, cfg, plan, group, dtype=spec.dtype, attention_backend=spec.attention_backend)
    if spec.quantized_weights:
        swapped = quantize_sharded(model, f, plan, dtype=spec.dtype)
        logger.info("rocmforge: rank %d quantized linear layers %s", rank, swapped or "none")
    return cfg, plan, group, model


def _worker_main(spec: TPSpec, rank: int, conn) -> None:
    try:
        conn.send(("alive",))  # spawned and imported: rank 0 may now block in the rendezvous
        if spec.device_type == "cpu":
            torch.set_num_threads(spec.worker_threads)
        cfg, plan, group, model = build_rank(spec, rank)
        conn.send(("ready",))
        worker_loop(model, group, conn, plan.local_config(cfg), spec.dtype)
    except BaseException:
        try:
            conn.send(("error", traceback.format_exc()))
        except OSError:
            pass
    finally:
        destroy_tp_group()
        conn.close()


class TensorParallelLLM(LLM):
    """rocmforge.LLM with the model split over `tensor_parallel_size` processes (module docstring).
    Same methods (generate, chat, stream, tokenize, ...); `model_config` is rank 0's local config
    (its heads and FFN slice, the full vocabulary), `full_config` the model's."""

    def __init__(self, model: str | None = None, *, tensor_parallel_size: int, device: str = "auto",
                 dtype: torch.dtype | None = None, max_model_len: int | None = None, seed: int | None = None,
                 kv_cache_tokens: int | None = None, attention_backend: str | None = None,
                 gpu_memory_utilization: float = 0.9, quantized_weights: bool | None = None,
                 timeout_s: float = 600.0, enforce_eager: bool = True,
                 kv_cache_dtype: str = "auto", max_num_seqs: int = 64,
                 batch_invariant: bool = False):  # fmt: skip
        # NOTE: always eager (enforce_eager is accepted for LLM's signature): see cuda_graphs=False below
        world = int(tensor_parallel_size)
        if world < 1:
            raise ValueError(f"tensor_parallel_size must be >= 1, got {tensor_parallel_size}")
        cfg, max_model_len = self._open(model, max_model_len)
        self.full_config = cfg
        TPPlan.make(cfg, 0, world)  # an unsplittable head layout fails here, before any process starts
        dev = resolve_device(device)
        attention_backend = attention_backend or ("torch" if dev.type == "cpu" else "triton")
        self.dtype = dtype or (torch.float32 if dev.type == "cpu" else torch.bfloat16)
        if batch_invariant:
            raise ValueError("batch_invariant runs on one device: use it with tensor_parallel_size=1")
        if kv_cache_dtype != "auto":
            raise ValueError("tensor parallelism keeps the KV cache in the model's dtype: "
                             "use kv_cache_dtype='auto' with tensor_parallel_size > 1")
        self.kv_dtype = self.dtype
        quantized = dev.type == "cuda" if quantized_weights is None else quantized_weights
        spec = TPSpec(str(self.path), world, f"tcp://127.0.0.1:{free_port()}", dev.type, self.dtype,
                      attention_backend, quantized, float(timeout_s),
                      max(1, (os.cpu_count() or 1) // world))  # fmt: skip
        ctx = mp.get_context("spawn")
        self._procs, conns = [], []
        for rank in range(1, world):
            parent, child = ctx.Pipe()
            p = ctx.Process(target=_worker_main, args=(spec, rank, child), daemon=True,
                            name=f"rocmforge-tp{rank}")  # fmt: skip
            p.start()
            child.close()
            self._procs.append(p)
            conns.append(parent)
        self.model = None
        try:
            self._wait_for(conns, "alive", spec.timeout_s)
            _, plan, group, shard = build_rank(spec, 0)
            self.model = TPModelProxy(shard, group, conns)
            self._wait_for(conns, "ready", spec.timeout_s)
        except BaseException as e:
            errors = worker_errors(conns)
            self.close()
            raise RuntimeError(f"tensor parallelism over {world} processes failed to start{errors}") from e
        self.device, self.model_config = group.device, plan.local_config(cfg)
        logger.info("rocmforge: %s over %d ranks (%s); rank 0 holds %d/%d query heads, %d/%d KV heads",
                    self.path.name, world, "nccl" if dev.type == "cuda" else "gloo", plan.num_heads,
                    cfg.num_heads, plan.num_kv_heads, cfg.num_kv_heads)  # fmt: skip
        if kv_cache_tokens is None:
            kv_cache_tokens = self._kv_tokens(max_model_len, gpu_memory_utilization)
        # NOTE: no graphs: rank 0's proxy broadcasts each step from the host
        econf = EngineConfig(max_model_len=max_model_len, kv_cache_tokens=kv_cache_tokens,
                             max_num_seqs=max_num_seqs, cuda_graphs=False)
        self.engine = TPEngine(self.model, self.tokenizer, self.model_config, econf, device=self.device,
                               dtype=self.dtype, seed=seed)  # fmt: skip
        self.last_output: RequestOutput | None = None

    def _wait_for(self, conns, word: str, timeout_s: float) -> None:
        """Each worker's next message must be `word`; an error, a dead process or the timeout raise."""
        deadline = time.monotonic() + timeout_s
        for rank, (c, p) in enumerate(zip(conns, self._procs), start=1):
            while not c.poll(0.5):
                if not p.is_alive() or time.monotonic() > deadline:
                    why = "exited" if not p.is_alive() else f"sent no {word!r} in {timeout_s:.0f} s"
                    raise RuntimeError(f"tensor-parallel rank {rank} {why}")
            kind, *rest = c.recv()
            if kind != word:
                detail = rest[0] if rest else kind
                raise RuntimeError(f"tensor-parallel rank {rank} failed to start:\n{detail}")

    def close(self) -> None:
        """Stop the workers and leave the process group (idempotent)."""
        if self.model is not None:
            self.model.stop()
        for p in self._procs:
            p.join(timeout=30)
            if p.is_alive():
                p.terminate()
                p.join(timeout=5)
        self._procs = []
        destroy_tp_group()

    def __enter__(self) -> TensorParallelLLM:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def generate_tp(model: str | None, prompts, params: SamplingParams | list[SamplingParams] | None = None, *,
                tensor_parallel_size: int = 2, **llm_kwargs) -> list[RequestOutput]:  # fmt: skip
    """One-shot: start the ranks, generate, stop them. llm_kwargs as for TensorParallelLLM."""
    with TensorParallelLLM(model, tensor_parallel_size=tensor_parallel_size, **llm_kwargs) as llm:
        return llm.generate(prompts, params)


__all__ = ["TPSpec", "TensorParallelLLM", "build_rank", "generate_tp"]
