"""The data between the scheduler and the model runner (STYLE rule 7).

    plan = scheduler.schedule()      # SchedulePlan: what to run this step
    out = runner.execute(plan)       # StepOutput: the tokens it sampled
    scheduler.update(plan, out)      # append tokens, stop, free

The runner turns a plan into one flat forward (rocmforge/attention/base.py): the sequences' new
tokens laid end to end, `query_start_loc` from the query lengths, `seq_lens` = `context_len`,
`block_tables` padded from `block_table`, `slot_mapping` from `ScheduledSeq.slot_mapping()`, and
`logits_indices` = the last new token of each entry with `sample=True`.

Before the forward the runner performs `block_copies` in every layer's K and V cache: the
copy-on-write of a block shared by forked sequences, which must see the old contents.
Pure Python: no torch here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class ScheduledSeq:
    """One sequence's share of a step."""

    seq_id: int
    token_ids: tuple[int, ...]  # (query_len,) token ids to run this step (a prefill chunk, or 1 to decode)
    start_pos: int  # position of token_ids[0] = tokens of this sequence already in the cache
    context_len: int  # tokens in the cache after this step = start_pos + query_len
    block_table: tuple[int, ...]  # block ids, ceil(context_len / block_size) of them: position p -> [p // bs]
    sample: bool  # draw from the logits of the last new token (last prefill chunk, or a decode)
    num_samples: int = 1  # tokens to draw when sampling: n on a request's first sample (it forks), else 1

    @property
    def query_len(self) -> int:
        """New tokens this step."""
        return len(self.token_ids)

    @property
    def positions(self) -> range:
        """Position of each new token: start_pos .. context_len - 1."""
        return range(self.start_pos, self.context_len)

    def slot_mapping(self, block_size: int) -> list[int]:
        """Cache slot (block * block_size + offset) of each new token, (query_len,)."""
        bt = self.block_table
        return [bt[p // block_size] * block_size + p % block_size for p in self.positions]


@dataclass(frozen=True)
class SchedulePlan:
    """Everything one step runs. Entries are in batch order: decodes first, then prefill chunks."""

    seqs: tuple[ScheduledSeq, ...] = ()
    block_copies: tuple[tuple[int, int], ...] = ()  # (src, dst) block ids to copy BEFORE the forward
    preempted_seq_ids: tuple[int, ...] = ()  # sequences sent back to waiting this step (informational)

    @property
    def num_batched_tokens(self) -> int:
        """Tokens in the forward (T of the flat batch)."""
        return sum(s.query_len for s in self.seqs)

    @property
    def num_seqs(self) -> int:
        return len(self.seqs)

    @property
    def is_empty(self) -> bool:
        return not self.seqs

    @property
    def sampled_seq_ids(self) -> list[int]:
        """Sequences the runner must sample for, in batch order (the rows of `logits_indices`)."""
        return [s.seq_id for s in self.seqs if s.sample]


@dataclass(frozen=True)
class FlatBatch:
    """A plan laid out as the flat forward's host lists (the runner makes tensors of them).

    S = scheduled sequences, T = new tokens in all, N = sequences that sample.
    """

    input_ids: list[int]  # (T,) new token ids, sequence after sequence
    positions: list[int]  # (T,) position of each new token in its sequence
    slot_mapping: list[int]  # (T,) cache slot of each new token: block * block_size + offset
    query_start_loc: list[int]  # (S+1,) cu_seqlens of the new tokens
    seq_lens: list[int]  # (S,) context length after this step (cached + new)
    block_tables: list[list[int]]  # S lists, unpadded: ceil(seq_lens[s] / block_size) block ids each
    logits_indices: list[int]  # (N,) row in T of the last new token of each sampling sequence
    sample_seq_ids: list[int]  # (N,) the seq_id of each logits row


def flatten(plan: SchedulePlan, block_size: int) -> FlatBatch:
    """Lay a plan out end to end (attention/base.py's AttentionMetadata, as Python lists)."""
    ids: list[int] = []
    pos: list[int] = []
    slots: list[int] = []
    qsl, rows, row_ids = [0], [], []
    for e in plan.seqs:
        ids += e.token_ids
        pos += e.positions
        slots += e.slot_mapping(block_size)
        qsl.append(len(ids))
        if e.sample:
            rows.append(len(ids) - 1)
            row_ids.append(e.seq_id)
    return FlatBatch(input_ids=ids, positions=pos, slot_mapping=slots, query_start_loc=qsl,
                     seq_lens=[e.context_len for e in plan.seqs],
                     block_tables=[list(e.block_table) for e in plan.seqs],
                     logits_indices=rows, sample_seq_ids=row_ids)


@dataclass(frozen=True)
class StepOutput:
    """What the runner (and the detokenizer) report back for one plan."""

    # seq_id -> the token ids drawn, num_samples of them, for every entry with sample=True
    sampled_token_ids: Mapping[int, tuple[int, ...]] = field(default_factory=dict)
    # seq_ids the detokenizer found a stop string in (finish_reason "stop"); set it with
    # dataclasses.replace(out, stopped=...) between runner.execute and scheduler.update
    stopped: frozenset[int] = frozenset()
