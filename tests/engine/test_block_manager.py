"""BlockManager: ref counts, prefix caching, copy-on-write, LRU eviction; pure Python, no torch.

The independent reference is a token-level model of the KV cache: every slot stores the token
written there, copies are applied as the runner would, and each live sequence must read its own
computed tokens back through its block table. Ref counts are checked against a recount of the
live block tables.
"""

from __future__ import annotations

import random
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass

import pytest

from rocmforge.cache.block_manager import BlockManager
from rocmforge.engine.sequence import Sequence

BS = 4


@dataclass(frozen=True)
class Params:
    n: int = 1
    max_tokens: int | None = None
    min_tokens: int = 0
    ignore_eos: bool = False
    stop_token_ids: tuple[int, ...] | None = None


def make_seq(seq_id: int, tokens: list[int]) -> Sequence:
    return Sequence(seq_id, f"r{seq_id}", tuple(tokens), Params())


class CacheModel:
    """Slots hold the token written there (the 'K/V'); None = never written."""

    def __init__(self, num_blocks: int, block_size: int) -> None:
        self.bs = block_size
        self.slots = [[None] * block_size for _ in range(num_blocks)]

    def copy(self, copies: list[tuple[int, int]]) -> None:
        for src, dst in copies:
            self.slots[dst] = list(self.slots[src])

    def write(self, seq: Sequence, start: int, stop: int) -> None:
        for p in range(start, stop):
            self.slots[seq.block_table[p // self.bs]][p % self.bs] = seq.token_ids[p]

    def read(self, seq: Sequence) -> list[int]:
        bt, bs = seq.block_table, self.bs
        return [self.slots[bt[p // bs]][p % bs] for p in range(seq.num_computed_tokens)]


def run_tokens(bm: BlockManager, cache: CacheModel, seq: Sequence, n: int) -> list[tuple[int, int]] | None:
    """Grow seq by its next n tokens the way a step does: slots, copies, write, advance, register."""
    copies = bm.append_slots(seq, n)
    if copies is None:
        return None
    cache.copy(copies)
    cache.write(seq, seq.num_computed_tokens, seq.num_computed_tokens + n)
    seq.num_computed_tokens += n
    bm.cache_full_blocks(seq)
    return copies


def admit(bm: BlockManager, cache: CacheModel, seq: Sequence) -> bool:
    """Admit with prefix hits and compute the rest of the prompt."""
    cached = bm.find_cached_prefix(seq)
    n = seq.num_tokens - len(cached) * BS
    if not bm.allocate(seq, n, cached):
        return False
    cache.write(seq, seq.num_computed_tokens, seq.num_computed_tokens + n)
    seq.num_computed_tokens += n
    bm.cache_full_blocks(seq)
    return True


def check_refcounts(bm: BlockManager, live: list[Sequence]) -> None:
    counts = Counter(b for s in live for b in s.block_table)
    for s in live:
        assert len(set(s.block_table)) == len(s.block_table), f"seq {s.seq_id} holds a block twice"
    for bid in range(bm.num_blocks):
        assert bm.ref_count(bid) == counts[bid], f"block {bid}"
    assert bm.num_free_blocks == bm.num_blocks - len(counts)
    bm.check_invariants()


def test_allocate_append_free() -> None:
    bm, cache = BlockManager(8, BS), CacheModel(8, BS)
    seq = make_seq(0, list(range(10)))  # 10 tokens -> 3 blocks
    assert bm.can_allocate(seq, 10) and admit(bm, cache, seq)
    assert len(seq.block_table) == 3 and bm.num_free_blocks == 5 and bm.usage == pytest.approx(3 / 8)
    seq.token_ids += [10, 11, 12]
    assert run_tokens(bm, cache, seq, 3) == []  # 13 tokens -> 4 blocks
    assert len(seq.block_table) == 4 and cache.read(seq) == list(range(13))
    check_refcounts(bm, [seq])
    bm.free(seq)
    assert bm.num_free_blocks == 8 and bm.usage == 0.0 and seq.block_table == []
    check_refcounts(bm, [])


def test_out_of_blocks_changes_nothing() -> None:
    bm, cache = BlockManager(3, BS), CacheModel(3, BS)
    big = make_seq(0, list(range(13)))  # 4 blocks > 3
    assert not bm.can_allocate(big, 13) and not bm.allocate(big, 13)
    assert big.block_table == [] and bm.num_free_blocks == 3
    seq = make_seq(1, list(range(12)))
    assert admit(bm, cache, seq)
    seq.token_ids.append(99)
    assert bm.append_slots(seq, 1) is None and len(seq.block_table) == 3
    check_refcounts(bm, [seq])
    with pytest.raises(RuntimeError, match="already holds blocks"):
        bm.allocate(seq, 1)


def test_prefix_hit_shares_full_blocks() -> None:
    bm, cache = BlockManager(16, BS), CacheModel(16, BS)
    a = make_seq(0, list(range(10)))  # blocks [0..3] [4..7] full, [8, 9] partial
    assert admit(bm, cache, a)
    b = make_seq(1, list(range(8)) + [50, 51, 52])
    hits = bm.find_cached_prefix(b)
    assert hits == a.block_table[:2]
    assert admit(bm, cache, b)
    assert b.num_cached_tokens == 8 and b.block_table[:2] == a.block_table[:2]
    assert b.block_table[2] != a.block_table[2]
    assert bm.ref_count(a.block_table[0]) == 2 and bm.num_prefix_hits == 2
    assert cache.read(b) == b.token_ids
    # a prompt that differs inside the first block shares nothing
    c = make_seq(2, [0, 1, 2, 77] + list(range(4, 10)))
    assert bm.find_cached_prefix(c) == []
    check_refcounts(bm, [a, b])


def test_prefix_hit_leaves_the_last_token_to_compute() -> None:
    bm, cache = BlockManager(16, BS), CacheModel(16, BS)
    a = make_seq(0, list(range(8)))  # exactly 2 full blocks
    assert admit(bm, cache, a)
    b = make_seq(1, list(range(8)))
    assert bm.find_cached_prefix(b) == a.block_table[:1]  # the 2nd block would leave nothing to run
    assert admit(bm, cache, b) and b.num_cached_tokens == 4
    assert bm.num_prefix_queries == 1 + 1 and bm.num_prefix_hits == 1  # a: 1 query, 0 hits; b: 1/1


def test_fork_copy_on_write_partial_block() -> None:
    bm, cache = BlockManager(16, BS), CacheModel(16, BS)
    parent = make_seq(0, list(range(6)))  # [0..3] full, [4, 5] partial
    assert admit(bm, cache, parent)
    kids = [parent.fork(i, i) for i in (1, 2)]
    for k in kids:
        bm.fork(parent, k)
    shared = parent.block_table[1]
    assert bm.ref_count(shared) == 3
    family = [parent, *kids]
    for i, s in enumerate(family):
        s.token_ids.append(100 + i)
    c1 = run_tokens(bm, cache, kids[0], 1)
    c2 = run_tokens(bm, cache, kids[1], 1)
    c0 = run_tokens(bm, cache, parent, 1)
    assert c1 == [(shared, kids[0].block_table[1])] and c2 == [(shared, kids[1].block_table[1])]
    assert c0 == [] and parent.block_table[1] == shared  # the last holder writes in place
    assert len({s.block_table[1] for s in family}) == 3 and len({s.block_table[0] for s in family}) == 1
    for i, s in enumerate(family):
        assert cache.read(s) == list(range(6)) + [100 + i]
    check_refcounts(bm, family)


def test_fork_full_last_block_needs_no_copy() -> None:
    bm, cache = BlockManager(16, BS), CacheModel(16, BS)
    parent = make_seq(0, list(range(8)))
    assert admit(bm, cache, parent)
    kid = parent.fork(1, 1)
    bm.fork(parent, kid)
    for i, s in enumerate((parent, kid)):
        s.token_ids.append(100 + i)
        assert run_tokens(bm, cache, s, 1) == []
    assert parent.block_table[:2] == kid.block_table[:2] and parent.block_table[2] != kid.block_table[2]
    check_refcounts(bm, [parent, kid])


def test_lru_eviction_of_cached_blocks() -> None:
    bm, cache = BlockManager(4, BS), CacheModel(4, BS)
    a = make_seq(0, list(range(9)))  # 2 full blocks + 1 partial -> 3 blocks
    assert admit(bm, cache, a)
    a0, a1 = a.block_table[:2]
    bm.free(a)  # full blocks stay cached, the partial one goes to the free list
    assert bm.num_cached_blocks == 2 and bm.num_free_blocks == 4
    b = make_seq(1, list(range(100, 109)))  # needs 3: the 2 free + 1 evicted
    assert admit(bm, cache, b)
    # a's tail block was freed first (reverse order), so it is the least recent and goes first
    assert a1 in b.block_table and a0 not in b.block_table
    b0, b1 = b.block_table[:2]
    bm.free(b)  # LRU now: a0 (oldest), b1, b0; 1 free block
    a2 = make_seq(2, list(range(9)))
    assert bm.find_cached_prefix(a2) == [a0]  # a1 was evicted, a0 still hits
    assert admit(bm, cache, a2)  # a0 revived + the free block + evicts b1 (b0 is more recent)
    assert b1 in a2.block_table and b0 not in a2.block_table
    assert cache.read(a2) == a2.token_ids
    assert bm.find_cached_prefix(make_seq(3, list(range(100, 109)))) == [b0]
    check_refcounts(bm, [a2])


def test_hit_on_a_cached_block_revives_it() -> None:
    bm, cache = BlockManager(3, BS), CacheModel(3, BS)
    a = make_seq(0, list(range(5)))
    assert admit(bm, cache, a)
    a0 = a.block_table[0]
    bm.free(a)  # a0 cached, 2 free
    d = make_seq(9, list(range(16)))  # hits a0, needs 3 new: 3 free-or-cached, but a0 itself is one
    hits = bm.find_cached_prefix(d)
    assert hits == [a0] and not bm.can_allocate(d, 12, hits) and not bm.allocate(d, 12, hits)
    assert bm.ref_count(a0) == 0 and bm.num_cached_blocks == 1 and d.block_table == []
    b = make_seq(1, list(range(8)))  # hits a0 (ref 0 -> 1), needs 1 new
    assert admit(bm, cache, b) and b.block_table[0] == a0 and bm.ref_count(a0) == 1
    assert bm.num_cached_blocks == 0
    c = make_seq(2, list(range(200, 208)))  # 2 blocks: only 1 left, the revived block is not evictable
    assert not admit(bm, cache, c)
    check_refcounts(bm, [b])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_workload_no_leaks(seed: int) -> None:
    """Random admits (shared prefixes), growth, forks, frees: contents, ref counts, no leaks."""
    rng = random.Random(seed)
    num_blocks = 24
    bm, cache = BlockManager(num_blocks, BS), CacheModel(num_blocks, BS)
    prefixes = [[rng.randrange(50) for _ in range(rng.randrange(1, 14))] for _ in range(4)]
    live: list[Sequence] = []
    next_id = 0
    for _ in range(600):
        op = rng.random()
        if op < 0.25 or not live:
            tail = [rng.randrange(50) for _ in range(rng.randrange(1, 6))]
            seq = make_seq(next_id, rng.choice(prefixes) + tail)
            next_id += 1
            if admit(bm, cache, seq):
                live.append(seq)
        elif op < 0.65:
            seq = rng.choice(live)
            n = rng.choice([1, 1, 1, 3, 6])
            seq.token_ids += [rng.randrange(50) for _ in range(n)]
            if run_tokens(bm, cache, seq, n) is None:
                del seq.token_ids[-n:]
        elif op < 0.75:
            parent = rng.choice(live)
            kid = parent.fork(next_id, 1)
            next_id += 1
            bm.fork(parent, kid)
            live.append(kid)
        else:
            seq = live.pop(rng.randrange(len(live)))
            bm.free(seq)
        check_refcounts(bm, live)
        for s in live:
            assert cache.read(s) == s.token_ids[:s.num_computed_tokens], f"seq {s.seq_id} reads wrong K/V"
    assert bm.num_prefix_hits > 0
    for s in live:
        bm.free(s)
    check_refcounts(bm, [])
    assert bm.num_free_blocks == num_blocks and bm.usage == 0.0


def test_modules_import_without_torch() -> None:
    code = ("import sys; sys.modules['torch'] = None\n"
            "import rocmforge.cache.block_manager, rocmforge.engine.scheduler, rocmforge.engine.plan, "
            "rocmforge.engine.sequence\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr


class _CollidingBlockManager(BlockManager):
    """Block hashes ignore the parent: equal blocks under different prefixes collide."""

    @staticmethod
    def _hash_block(parent_hash: int | None, token_ids: tuple[int, ...]) -> int:
        return hash(token_ids)


def test_hash_collision_does_not_alias() -> None:
    bm, cache = _CollidingBlockManager(8, BS), CacheModel(8, BS)
    a = make_seq(0, list(range(9)))
    b = make_seq(1, list(range(50, 59)))
    assert admit(bm, cache, a) and admit(bm, cache, b)
    c = make_seq(2, list(range(4)) + list(range(54, 59)))  # block 0 = a's; block 1 = b's tokens, other parent
    assert bm.find_cached_prefix(c) == a.block_table[:1]
    assert admit(bm, cache, c) and cache.read(c) == c.token_ids
    check_refcounts(bm, [a, b, c])
