"""Graph-captured decode: one CUDA (or HIP) graph per batch-size bucket, replayed every decode step.

A decode step of B sequences runs the same kernels every time; only the values in a few small tensors
change. So for each bucket b in (1, 2, 4, 8, 16, 32, 64, ...) up to max_num_seqs we capture, once,

    logits[:b] = model(input_ids[:b], positions[:b], meta_b)        meta_b over the static buffers

and a step of B <= b sequences writes its values into the buffers (one host-to-device copy), pads rows
B..b-1 (slot -1: kv_store skips it; seq_len 0: paged decode writes zeros for it), replays the graph and
reads logits[:B]. Shapes the kernels see are fixed per bucket: the block table is always
ceil(max_model_len / block_size) wide and the decode split-K factor is chosen for max_model_len (each
program sizes its chunk from the live seq_len, so shorter contexts just leave splits empty).

Capture happens lazily, the first time a bucket is used, after one eager warm-up run of that bucket
(Triton compiles there, outside the capture), or for every bucket at once with `capture_all` (the
server and the bench do that at start: a first-time compile inside a request costs seconds). A
capture that fails turns graphs off for the engine, with the reason logged once; the step then runs
eagerly. All buckets share one memory pool.
"""

from __future__ import annotations

import logging

import numpy as np
import torch

from ..attention.base import AttentionMetadata

logger = logging.getLogger(__name__)


def batch_buckets(max_num_seqs: int) -> tuple[int, ...]:
    """1, 2, 4, 8, 16, 24, 32, 48, 64, 96, 128, ... up to (and always including) max_num_seqs."""
    out, b = [], 1
    while b < max_num_seqs:
        out.append(b)
        if b >= 16:
            out.append(b + b // 2)
        b *= 2
    return tuple(x for x in out if x < max_num_seqs) + (max_num_seqs,)


def stage_decode(h: np.ndarray, tables: np.ndarray, block_size: int, token_ids, positions,
                 block_tables) -> int:  # fmt: skip
    """Fill the staging rows for B decode tokens: h (4n,) int64 = ids | positions | slots | seq_lens
    (rows B..n-1: 0, 0, -1, 0) and tables (n, width) int32 rows 0..B-1; returns the table columns used.

    Only the first ceil(seq_len / block_size) entries of a table row are ever read, so a row's tail
    and the padding rows' tables keep stale values and are not written."""
    n, B = len(h) // 4, len(positions)
    h[:] = 0
    h[2 * n:3 * n] = -1  # padding rows store nothing
    if token_ids is not None:  # None: the ids are written on the device (DecodeGraphs.launch_ahead)
        h[0:B] = token_ids
    pos = np.asarray(positions, dtype=np.int64)
    h[n:n + B] = pos
    h[3 * n:3 * n + B] = pos + 1  # seq_lens: cached + this token
    for r, table in enumerate(block_tables):
        tables[r, :len(table)] = table
    blocks = tables[np.arange(B), pos // block_size].astype(np.int64)
    h[2 * n:2 * n + B] = blocks * block_size + pos % block_size
    return max(len(t) for t in block_tables)


class DecodeGraphs:
    """Static decode buffers and the graphs captured over them (see the module docstring)."""

    def __init__(self, model, kv_caches, *, max_num_seqs: int, max_model_len: int, block_size: int,
                 device: torch.device, one_bucket: bool = False):  # fmt: skip
        """one_bucket: capture only max_num_seqs (batch-invariant decode: every step the same shapes)."""
        self.model, self.kv_caches, self.device = model, kv_caches, torch.device(device)
        self.block_size, self.max_model_len = block_size, max_model_len
        self.buckets = (max_num_seqs,) if one_bucket else batch_buckets(max_num_seqs)
        self.width = -(-max_model_len // block_size)  # block table columns
        n = self.buckets[-1]
        # staging rows in pinned memory: ids | positions | slots | seq_lens, and the block tables
        self._host = torch.zeros(4 * n, dtype=torch.int64, pin_memory=True)
        self._host_tables = torch.zeros(n, self.width, dtype=torch.int32, pin_memory=True)
        self._np, self._np_tables = self._host.numpy(), self._host_tables.numpy()
        self._copied = torch.cuda.Event()
        self._dev = torch.zeros_like(self._host, device=self.device)
        self.input_ids = self._dev[0:n]  # (n,)
        self.positions = self._dev[n:2 * n]  # (n,)
        self.slots = self._dev[2 * n:3 * n]  # (n,)
        self.seq_lens = torch.zeros(n, dtype=torch.int32, device=self.device)  # (n,)
        self.block_tables = torch.zeros(n, self.width, dtype=torch.int32, device=self.device)  # (n, width)
        self.query_start = torch.arange(n + 1, dtype=torch.int32, device=self.device)  # (n+1,)
        self._graphs: dict[int, tuple[torch.cuda.CUDAGraph, torch.Tensor]] = {}
        self._pool = None
        self.disabled: str | None = None  # why graphs are off, once they are

    @property
    def captured(self) -> list[int]:
        return list(self._graphs)

    def bucket(self, num_seqs: int) -> int | None:
        return next((b for b in self.buckets if b >= num_seqs), None)

    def _meta(self, b: int) -> AttentionMetadata:
        return AttentionMetadata(
            query_start_loc=self.query_start[:b + 1], seq_lens=self.seq_lens[:b],
            slot_mapping=self.slots[:b], block_tables=self.block_tables[:b],
            query_lens_cpu=[1] * b, seq_lens_cpu=[self.max_model_len] * b,  # split-K sized for the longest
            kv_caches=self.kv_caches, logits_indices=None,
        )  # fmt: skip

    def _fill(self, b: int, token_ids, positions, block_tables) -> None:
        """Write one step's values (B rows, padded to b) into the static buffers; token_ids is a host
        list, or (B,) int64 on the device."""
        B = len(positions)
        self._copied.synchronize()  # the last step's copies have left the staging rows
        on_dev = isinstance(token_ids, torch.Tensor)
        cols = stage_decode(self._np, self._np_tables, self.block_size, None if on_dev else token_ids,
                            positions, block_tables)  # fmt: skip
        self._dev.copy_(self._host, non_blocking=True)
        if on_dev:
            self.input_ids[:B].copy_(token_ids)
        self.block_tables[:B, :cols].copy_(self._host_tables[:B, :cols], non_blocking=True)
        self._copied.record()
        n = self.buckets[-1]
        self.seq_lens[:b].copy_(self._dev[3 * n:3 * n + b])

    def _try_capture(self, b: int) -> bool:
        """Capture bucket b; a failure turns graphs off for good, with the reason logged once."""
        try:
            self._capture(b)
            return True
        except Exception as e:  # noqa: BLE001 - any capture failure means: run eagerly, say why
            self.disabled = f"capturing the batch-{b} decode graph failed: {type(e).__name__}: {e}"
            logger.warning("rocmforge: CUDA graphs off, decode runs eagerly: %s", self.disabled)
            self._graphs.clear()
            torch.cuda.synchronize(self.device)
            return False

    def _capture(self, b: int) -> None:
        meta = self._meta(b)
        with torch.inference_mode():
            self.model(self.input_ids[:b], self.positions[:b], meta)  # warm-up: Triton compiles here
            torch.cuda.synchronize(self.device)
            graph = torch.cuda.CUDAGraph()
            if self._pool is None:
                self._pool = torch.cuda.graph_pool_handle()
            with torch.cuda.graph(graph, pool=self._pool):
                logits = self.model(self.input_ids[:b], self.positions[:b], meta)  # (b, V)
        self._graphs[b] = (graph, logits)

    def capture_all(self) -> list[int]:
        """Capture every bucket not yet captured (Triton compiles each batch size's kernels here, not
        inside the first request that needs them); returns the buckets captured. The buffers hold
        padding rows only (slot -1, seq_len 0), so the cache is not touched."""
        if self.disabled is not None:
            return []
        self._copied.synchronize()
        self._dev.zero_()
        self.slots.fill_(-1)
        self.seq_lens.zero_()
        done = []
        for b in self.buckets:
            if b not in self._graphs:
                if not self._try_capture(b):
                    return []
                done.append(b)
        return done

    def launch_ahead(self, tokens: torch.Tensor, positions: list[int],
                     block_tables: list[list[int]]) -> torch.Tensor | None:  # fmt: skip
        """Replay a decode step whose input ids are still on the device, (B,) int64 (the last step's
        draws, not yet read by the host): its logits (B, V), or None when no captured graph fits."""
        b = self.bucket(len(positions))
        if self.disabled is not None or b not in self._graphs or max(positions) >= self.max_model_len:
            return None
        self._fill(b, tokens, positions, block_tables)
        graph, logits = self._graphs[b]
        graph.replay()
        return logits[:len(positions)]

    def run(self, token_ids: list[int], positions: list[int],
            block_tables: list[list[int]]) -> torch.Tensor | None:  # fmt: skip
        """Logits (B, V) of one decode step, or None when graphs cannot take it (run it eagerly)."""
        b = self.bucket(len(token_ids))
        if self.disabled is not None or b is None or max(positions) >= self.max_model_len:
            return None
        self._fill(b, token_ids, positions, block_tables)
        if b not in self._graphs and not self._try_capture(b):
            return None
        # NOTE: a first capture's warm-up already ran this step; the replay writes the same K/V again
        graph, logits = self._graphs[b]
        graph.replay()
        return logits[:len(token_ids)]
