"""One forward step run by every rank: rank 0's proxy sends it, the workers replay it.

Rank 0 runs the engine, whose model is a `TPModelProxy`. Each forward, `proxy(input_ids, positions,
meta)`:

  1. sends every worker a `StepHeader` over its pipe: the host-side data (sizes, query_lens_cpu,
     seq_lens_cpu, which KV cache, the copy-on-write block copies);
  2. broadcasts one int64 tensor packing the device-side inputs (torch.distributed, NCCL or gloo):
        [input_ids (T) | positions (T) | query_start_loc (S+1) | seq_lens (S) | slot_mapping (T) |
         block_tables (S*B) | logits_indices (N)]
  3. runs its own shard's forward; each collective inside meets the workers' same forward.

`worker_loop` on ranks > 0 unpacks the step into an AttentionMetadata over its own KV cache (its
local KV heads only), applies the block copies, runs the forward, and waits for the next step until
told to stop or rank 0's end of the pipe closes. NOTE: control goes over pipes, not collectives, so
an idle worker waits for the next request without a collective timeout.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..attention.base import AttentionMetadata
from ..cache.kv_cache import allocate_kv_cache
from ..config import ModelConfig
from ..engine.llm_engine import LLMEngine
from ..engine.plan import SchedulePlan
from .layers import TPCausalLM
from .parallel_state import TPGroup

KVCaches = list[tuple[torch.Tensor, torch.Tensor]]  # per layer (k, v): (num_blocks, block_size, Hkv, D)


@dataclass(frozen=True)
class StepHeader:
    num_tokens: int  # T new tokens in the flat batch
    query_lens: tuple[int, ...]  # (S,) new tokens per sequence (meta.query_lens_cpu)
    seq_lens: tuple[int, ...]  # (S,) context after the step (meta.seq_lens_cpu)
    table_width: int  # B: block table columns
    num_logits: int  # N logits rows; -1: meta.logits_indices is None (every row)
    cache: str  # "main": the engine's cache, kept across steps; "scratch": a fresh one for this step
    num_blocks: int  # blocks of that cache
    block_size: int  # token slots per block
    block_copies: tuple[tuple[int, int], ...]  # (src, dst) copies into the main cache before the step

    def sizes(self) -> list[int]:  # lengths of the packed tensor's parts, in order
        T, S, B = self.num_tokens, len(self.query_lens), self.table_width
        return [T, T, S + 1, S, T, S * B, max(self.num_logits, 0)]


class TPModelProxy:
    """Rank 0's stand-in for the model: same call signature, drives the workers' forwards too."""

    def __init__(self, model: TPCausalLM, group: TPGroup, conns: list):
        self.model, self.group, self.conns = model, group, conns  # conns[r - 1]: pipe to rank r
        self.config = model.config
        self._main: KVCaches | None = None
        self._copies: tuple[tuple[int, int], ...] = ()

    def bind_main_cache(self, kv_caches: KVCaches) -> None:
        self._main = kv_caches

    def queue_block_copies(self, copies) -> None:  # applied by the workers with the next main step
        self._copies = tuple((int(s), int(d)) for s, d in copies)

    def __call__(self, input_ids: torch.Tensor, positions: torch.Tensor,
                 meta: AttentionMetadata) -> torch.Tensor:  # fmt: skip
        main = meta.kv_caches is self._main
        k0 = meta.kv_caches[0][0]  # (num_blocks, block_size, Hkv, D)
        li = meta.logits_indices
        header = StepHeader(int(input_ids.numel()), tuple(meta.query_lens_cpu), tuple(meta.seq_lens_cpu),
                            int(meta.block_tables.shape[1]), -1 if li is None else int(li.numel()),
                            "main" if main else "scratch", int(k0.shape[0]), int(k0.shape[1]),
                            self._copies if main else ())  # fmt: skip
        self._copies = ()
        parts = [input_ids, positions, meta.query_start_loc, meta.seq_lens, meta.slot_mapping,
                 meta.block_tables] + ([] if li is None else [li])  # fmt: skip
        packed = torch.cat([p.reshape(-1).to(torch.int64) for p in parts])  # (sum(header.sizes()),)
        try:
            for c in self.conns:
                c.send(("step", header))
            self.group.broadcast(packed)
            return self.model(input_ids, positions, meta)  # (N, V)
        except Exception as e:
            raise RuntimeError(f"tensor-parallel step failed{self.worker_errors()}") from e

    def worker_errors(self) -> str:
        return worker_errors(self.conns)

    def stop(self) -> None:
        for c in self.conns:
            try:
                c.send(("stop",))
            except (BrokenPipeError, OSError):
                pass


def worker_errors(conns: list) -> str:
    """'; rank r: <traceback>' for each worker (conns[r - 1]) that reported an error, else ''."""
    msgs = []
    for r, c in enumerate(conns, start=1):
        try:
            while c.poll():
                kind, *rest = c.recv()
                if kind == "error":
                    msgs.append(f"rank {r}: {rest[0]}")
        except (EOFError, OSError):
            msgs.append(f"rank {r}: its process is gone")
    return "".join(f"; {m}" for m in msgs)


def worker_loop(model: TPCausalLM, group: TPGroup, conn, local_config: ModelConfig, dtype: torch.dtype):
    """Ranks > 0: replay rank 0's steps until ("stop",) or EOF on the pipe."""
    main: KVCaches | None = None
    while True:
        try:
            msg = conn.recv()
        except EOFError:  # rank 0 is gone
            return
        if msg[0] == "stop":
            return
        h: StepHeader = msg[1]
        packed = group.broadcast(torch.empty(sum(h.sizes()), dtype=torch.int64, device=group.device))
        ids, pos, qsl, sl, slots, tables, li = packed.split(h.sizes())
        if h.cache == "main":
            if main is None or tuple(main[0][0].shape[:2]) != (h.num_blocks, h.block_size):
                main = allocate_kv_cache(local_config, h.num_blocks, h.block_size, device=group.device,
                                         dtype=dtype)  # fmt: skip
            for src, dst in h.block_copies:  # the engine's copy-on-write, in its order
                for k, v in main:
                    k[dst].copy_(k[src])
                    v[dst].copy_(v[src])
            caches = main
        else:
            caches = allocate_kv_cache(local_config, h.num_blocks, h.block_size, device=group.device,
                                       dtype=dtype)  # fmt: skip
        S = len(h.query_lens)
        meta = AttentionMetadata(
            query_start_loc=qsl.to(torch.int32), seq_lens=sl.to(torch.int32), slot_mapping=slots,
            block_tables=tables.view(S, h.table_width).to(torch.int32), query_lens_cpu=list(h.query_lens),
            seq_lens_cpu=list(h.seq_lens), kv_caches=caches, logits_indices=li if h.num_logits >= 0 else None,
        )  # fmt: skip
        with torch.inference_mode():
            model(ids, pos, meta)


class TPEngine(LLMEngine):
    """LLMEngine over a TPModelProxy: tells the proxy which cache is the main one and hands it each
    step's block copies (the base engine applies them to rank 0's cache only)."""

    def __init__(self, proxy: TPModelProxy, *args, **kwargs):
        super().__init__(proxy, *args, **kwargs)
        proxy.bind_main_cache(self.kv_caches)

    def _execute(self, plan: SchedulePlan) -> torch.Tensor:
        self.model.queue_block_copies(plan.block_copies)
        return super()._execute(plan)


__all__ = ["StepHeader", "TPEngine", "TPModelProxy", "worker_errors", "worker_loop"]
