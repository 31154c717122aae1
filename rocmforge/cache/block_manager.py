"""BlockManager: paged KV blocks with reference counts, prefix caching and copy-on-write.

The KV cache is `num_blocks` blocks of `block_size` token slots. A sequence owns a block table;
each block has a reference count = the number of live block tables holding it. Every block is in
exactly one of three states:

    in use     ref_count >= 1                 held by one or more sequences (forks, prefix hits)
    cached     ref_count == 0, hash set       free, but its K/V is kept for prefix hits (LRU order)
    free       ref_count == 0, no hash        on the free list

Prefix caching: a full block whose K/V has been computed is registered under the chained hash

    h_i = hash((h_{i-1}, tokens of block i))        h_{-1} = None

so h_i names the whole prefix token_ids[:(i+1) * block_size]. A new sequence whose leading full
blocks hash to registered blocks takes them (ref +1) instead of recomputing them; a hit on a
cached block brings it back into use. A new block comes from the free list first; when that is
empty the least recently freed cached block is evicted (its hash forgotten) and reused.
NOTE: Python's hash of a tuple of ints is 64-bit and deterministic across runs; a hit also
compares the stored tokens and parent hash, so only a chain collision (~2^-64) could alias.

Copy-on-write: `fork` shares all of a parent's blocks with a child. Full blocks are never written
again, so only a shared *partial* last block is a hazard: the first sequence to write into it
while ref_count > 1 gets a fresh block, and the (src, dst) copy is returned for the runner.
Pure Python over integer block ids: no torch (STYLE rule 6).
"""

from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass

from rocmforge.engine.sequence import Sequence


@dataclass(eq=False)
class _Block:
    block_id: int
    ref_count: int = 0
    block_hash: int | None = None  # set while registered in the prefix cache
    parent_hash: int | None = None  # h_{i-1} of the registered prefix (hit verification)
    token_ids: tuple[int, ...] = ()  # the block's tokens while registered (hit verification)


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


class BlockManager:
    """Allocates KV blocks to sequences; see the module docstring for the states and rules."""

    def __init__(self, num_blocks: int, block_size: int, *, enable_prefix_caching: bool = True) -> None:
        if num_blocks < 1 or block_size < 1:
            raise ValueError(f"BlockManager needs num_blocks >= 1 and block_size >= 1, "
                             f"got num_blocks={num_blocks}, block_size={block_size}")
        self.num_blocks = num_blocks
        self.block_size = block_size
        self.enable_prefix_caching = enable_prefix_caching
        self._blocks = [_Block(i) for i in range(num_blocks)]
        self._free: deque[int] = deque(range(num_blocks))  # ref 0, no hash
        self._evictable: OrderedDict[int, None] = OrderedDict()  # ref 0, hashed; oldest first
        self._hash_to_block: dict[int, int] = {}  # registered hash -> block id
        self.num_prefix_queries = 0  # full prompt blocks looked up at admission (blocks)
        self.num_prefix_hits = 0  # of those, served from the cache (blocks)

    # ---- state --------------------------------------------------------------------------
    @property
    def num_free_blocks(self) -> int:
        """Blocks a new allocation can take: free plus evictable cached blocks."""
        return len(self._free) + len(self._evictable)

    @property
    def num_cached_blocks(self) -> int:
        """Blocks with ref 0 kept for prefix hits."""
        return len(self._evictable)

    @property
    def usage(self) -> float:
        """Fraction of blocks in use (ref_count >= 1), 0.0 .. 1.0."""
        return 1.0 - self.num_free_blocks / self.num_blocks

    @property
    def prefix_hit_rate(self) -> float:
        return self.num_prefix_hits / self.num_prefix_queries if self.num_prefix_queries else 0.0

    def ref_count(self, block_id: int) -> int:
        return self._blocks[block_id].ref_count

    # ---- prefix cache -------------------------------------------------------------------
    def _block_hashes(self, seq: Sequence, num_full_blocks: int) -> list[int]:
        """seq.block_hashes extended to `num_full_blocks` chained hashes (token_ids only grow)."""
        bs, hashes = self.block_size, seq.block_hashes
        for i in range(len(hashes), num_full_blocks):
            parent = hashes[i - 1] if i else None
            hashes.append(self._hash_block(parent, tuple(seq.token_ids[i * bs:(i + 1) * bs])))
        return hashes

    @staticmethod
    def _hash_block(parent_hash: int | None, token_ids: tuple[int, ...]) -> int:
        return hash((parent_hash, token_ids))

    def find_cached_prefix(self, seq: Sequence) -> list[int]:
        """Block ids of the registered blocks matching seq's leading full blocks; refs untouched.

        At least one token is left out so that the step computes logits for the last token.
        """
        if not self.enable_prefix_caching:
            return []
        bs = self.block_size
        n_full = (seq.num_tokens - 1) // bs
        hashes = self._block_hashes(seq, n_full)
        hits: list[int] = []
        for i in range(n_full):
            bid = self._hash_to_block.get(hashes[i])
            if bid is None:
                break
            b = self._blocks[bid]
            if b.token_ids != tuple(seq.token_ids[i * bs:(i + 1) * bs]) or b.parent_hash != (
                    hashes[i - 1] if i else None):
                break
            hits.append(bid)
        return hits

    def cache_full_blocks(self, seq: Sequence) -> None:
        """Register seq's full blocks whose K/V is computed (call after a step advanced it)."""
        if not self.enable_prefix_caching:
            return
        bs = self.block_size
        n_full = min(seq.num_computed_tokens // bs, len(seq.block_table))
        hashes = self._block_hashes(seq, n_full)
        for i in range(seq.num_hashed_blocks, n_full):
            b = self._blocks[seq.block_table[i]]
            if b.block_hash is None and hashes[i] not in self._hash_to_block:
                # NOTE: a block with the same contents already registered wins; this one stays private.
                b.block_hash, b.parent_hash = hashes[i], hashes[i - 1] if i else None
                b.token_ids = tuple(seq.token_ids[i * bs:(i + 1) * bs])
                self._hash_to_block[hashes[i]] = b.block_id
        seq.num_hashed_blocks = max(seq.num_hashed_blocks, n_full)

    # ---- allocation ---------------------------------------------------------------------
    def _take_new(self) -> int:
        """A block with ref 1 from the free list, else the least recently freed cached block."""
        if self._free:
            bid = self._free.popleft()
        else:
            bid, _ = self._evictable.popitem(last=False)
            b = self._blocks[bid]
            del self._hash_to_block[b.block_hash]
            b.block_hash, b.parent_hash, b.token_ids = None, None, ()
        self._blocks[bid].ref_count = 1
        return bid

    def _take_shared(self, bid: int) -> None:
        b = self._blocks[bid]
        if b.ref_count == 0:
            del self._evictable[bid]
        b.ref_count += 1

    def _release(self, bid: int) -> None:
        b = self._blocks[bid]
        if b.ref_count <= 0:
            raise RuntimeError(f"block {bid} released with ref_count {b.ref_count}: a block table is stale")
        b.ref_count -= 1
        if b.ref_count == 0:
            if b.block_hash is not None:
                self._evictable[bid] = None  # most recently freed: evicted last
            else:
                self._free.append(bid)

    def _cow_index(self, seq: Sequence, num_new_tokens: int) -> int | None:
        """Index in seq's table of a shared partial block the next write would touch, else None."""
        pos, bs = seq.num_computed_tokens, self.block_size
        i = pos // bs
        if num_new_tokens > 0 and pos % bs and i < len(seq.block_table) and (
                self._blocks[seq.block_table[i]].ref_count > 1):
            return i
        return None

    def can_allocate(self, seq: Sequence, num_new_tokens: int, cached: list[int] | None = None) -> bool:
        """Whether `allocate(seq, num_new_tokens, cached)` would succeed now."""
        n_cached = len(cached or [])
        need = _cdiv(n_cached * self.block_size + num_new_tokens, self.block_size) - n_cached
        revived = sum(1 for bid in cached or [] if self._blocks[bid].ref_count == 0)
        return need <= self.num_free_blocks - revived

    def allocate(self, seq: Sequence, num_new_tokens: int, cached: list[int] | None = None) -> bool:
        """Admit a sequence with no blocks: take the prefix hits `cached` (from find_cached_prefix,
        this step) and new blocks for `num_new_tokens` more. Sets seq.num_computed_tokens to the
        cached tokens. Returns False, changing nothing, when there are not enough blocks."""
        if seq.block_table:
            raise RuntimeError(f"sequence {seq.seq_id} already holds blocks; use append_slots")
        cached = cached or []
        if not self.can_allocate(seq, num_new_tokens, cached):
            return False
        for bid in cached:
            self._take_shared(bid)
        seq.block_table = list(cached)
        seq.num_computed_tokens = seq.num_cached_tokens = len(cached) * self.block_size
        seq.num_hashed_blocks = len(cached)
        if self.enable_prefix_caching:
            self.num_prefix_queries += (seq.num_tokens - 1) // self.block_size
            self.num_prefix_hits += len(cached)
        for _ in range(_cdiv(seq.num_computed_tokens + num_new_tokens, self.block_size) - len(cached)):
            seq.block_table.append(self._take_new())
        return True

    def append_slots(self, seq: Sequence, num_new_tokens: int) -> list[tuple[int, int]] | None:
        """Grow a running sequence's table for `num_new_tokens` more tokens from num_computed_tokens.

        Returns the copy-on-write copies [(src, dst)] the runner must do first ([] usually), or
        None, changing nothing, when there are not enough free blocks (the caller preempts).
        """
        table = seq.block_table
        need = _cdiv(seq.num_computed_tokens + num_new_tokens, self.block_size) - len(table)
        cow = self._cow_index(seq, num_new_tokens)
        if need <= 0 and cow is None:
            return []  # the common decode step: room left in the last, private block
        if max(need, 0) + (cow is not None) > self.num_free_blocks:
            return None
        copies: list[tuple[int, int]] = []
        if cow is not None:
            src, dst = table[cow], self._take_new()
            self._release(src)
            table[cow] = dst
            copies.append((src, dst))
        for _ in range(need):
            table.append(self._take_new())
        return copies

    def fork(self, parent: Sequence, child: Sequence) -> None:
        """Share every block of parent with child (ref +1 each); writes later copy on write."""
        if child.block_table:
            raise RuntimeError(f"fork target {child.seq_id} already holds blocks")
        for bid in parent.block_table:
            self._take_shared(bid)
        child.block_table = list(parent.block_table)

    def free(self, seq: Sequence) -> None:
        """Drop seq's blocks. Tail blocks first so that, once cached, they are evicted first."""
        for bid in reversed(seq.block_table):
            self._release(bid)
        seq.block_table = []
        seq.num_hashed_blocks = 0

    # ---- checks -------------------------------------------------------------------------
    def check_invariants(self) -> None:
        """Raise AssertionError if the three block states or the hash map are inconsistent."""
        free, evict = set(self._free), set(self._evictable)
        assert len(free) == len(self._free), "duplicate block on the free list"
        assert not free & evict, "block both free and cached"
        for b in self._blocks:
            assert b.ref_count >= 0, f"block {b.block_id} ref_count {b.ref_count}"
            assert (b.ref_count == 0) == (b.block_id in free or b.block_id in evict), f"block {b.block_id}"
            assert (b.block_id in evict) <= (b.block_hash is not None), f"cached block {b.block_id} unhashed"
            assert (b.block_id in free) <= (b.block_hash is None), f"free block {b.block_id} hashed"
            if b.block_hash is not None:
                assert self._hash_to_block.get(b.block_hash) == b.block_id, f"block {b.block_id} hash map"
        assert len(self._hash_to_block) == sum(b.block_hash is not None for b in self._blocks)
