"""Shared fixtures for model tests: real GGUF models (loaded once) and a tiny paged-cache driver.

`Session` stands in for the engine's block manager in tests: it hands out cache blocks from a
shuffled pool, so block tables are never contiguous, and runs flat batches of (sequence, new tokens).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import pytest
import torch

from rocmforge.attention import build_metadata
from rocmforge.cache.kv_cache import allocate_kv_cache
from rocmforge.config import ModelConfig
from rocmforge.gguf import GGUFFile

torch.set_num_threads(max(1, min(torch.get_num_threads(), 4)))


def model_path(name: str):
    from rocmforge.hub import ModelNotFoundError, resolve_model

    try:
        return resolve_model(name)
    except ModelNotFoundError as e:  # no network and no cached copy: say so, do not pass silently
        pytest.skip(f"real model {name!r} is not available: {e}")


@dataclass
class Loaded:
    name: str
    file: GGUFFile
    config: ModelConfig
    model: torch.nn.Module


_OURS: dict[str, Loaded] = {}


def load_ours(name: str) -> Loaded:
    """Our model for a short name, loaded once per test session (fp32, CPU, torch attention)."""
    from rocmforge.models import load_model

    if name not in _OURS:
        f = GGUFFile(model_path(name))
        cfg = ModelConfig.from_gguf(f)
        _OURS[name] = Loaded(name, f, cfg, load_model(f, cfg))
    return _OURS[name]


def drop_ours(name: str) -> None:
    _OURS.pop(name, None)


@dataclass
class Session:
    """Paged KV cache plus per-sequence block tables drawn from a shuffled pool of block ids."""

    model: torch.nn.Module
    config: ModelConfig
    num_blocks: int = 256
    block_size: int = 16
    seed: int = 0
    kv: list = field(init=False)
    free: list[int] = field(init=False)
    tables: dict[int, list[int]] = field(default_factory=dict)
    lens: dict[int, int] = field(default_factory=dict)

    def __post_init__(self):
        self.kv = allocate_kv_cache(self.config, self.num_blocks, self.block_size)
        self.free = list(range(self.num_blocks))
        random.Random(self.seed).shuffle(self.free)

    def step(self, batch: list[tuple[int, list[int]]], *, logits: str = "last") -> torch.Tensor:
        """batch: (sequence id, new token ids) per sequence -> logits rows (see build_metadata)."""
        ids, pos, qlens, ctx, tables = [], [], [], [], []
        for sid, toks in batch:
            start = self.lens.get(sid, 0)
            table = self.tables.setdefault(sid, [])
            while len(table) * self.block_size < start + len(toks):
                table.append(self.free.pop())
            ids += toks
            pos += range(start, start + len(toks))
            qlens.append(len(toks))
            ctx.append(start)
            tables.append(table)
            self.lens[sid] = start + len(toks)
        meta = build_metadata(qlens, ctx, tables, self.block_size, self.kv, "cpu", logits=logits)
        with torch.inference_mode():
            return self.model(torch.tensor(ids), torch.tensor(pos), meta)

    def greedy(self, sid: int, prompt: list[int], n: int) -> tuple[list[int], list[torch.Tensor]]:
        """Prefill `prompt`, then decode one token per step: n greedy tokens and each step's logits."""
        logits = self.step([(sid, prompt)])[0]
        out, steps = [], []
        for _ in range(n):
            steps.append(logits)
            out.append(int(logits.argmax()))
            logits = self.step([(sid, [out[-1]])])[0]
        return out, steps


@pytest.fixture(scope="session")
def smollm2() -> Loaded:
    return load_ours("smollm2")


@pytest.fixture(scope="session")
def make_session():
    """Session factory (tests have no package, so they reach the helper through a fixture)."""
    return Session


@pytest.fixture(scope="session")
def model_store():
    """load(name) / drop(name) / path(name) over the session's shared models."""
    from types import SimpleNamespace

    return SimpleNamespace(load=load_ours, drop=drop_ours, path=model_path)
