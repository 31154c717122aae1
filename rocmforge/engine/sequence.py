"""Sequence: the state of one generated sequence, shared by the scheduler and the block manager.

A request with `n` samples starts as one Sequence; when its prompt is fully prefilled the scheduler
draws `n` tokens and forks `n - 1` children that share the prompt's KV blocks (copy-on-write).

Token bookkeeping (all counts are tokens):

    token_ids = prompt tokens + output tokens            len = num_tokens
    token_ids[:num_computed_tokens]                      have their K/V in the cache
    token_ids[num_computed_tokens:]                      still to run (the prompt, or the last sampled token)

Token position p lives in block `block_table[p // block_size]` at offset `p % block_size`.
Pure Python: no torch here (STYLE rule 6).
"""

from __future__ import annotations

import enum
from collections.abc import Sequence as SequenceABC
from dataclasses import dataclass, field
from typing import Protocol


class StopParams(Protocol):
    """The fields of `SamplingParams` (vLLM names) the scheduler reads; the sampler reads the rest."""

    n: int  # samples per request (forks after the prompt)
    max_tokens: int | None  # output tokens at most; None = until the context ends
    min_tokens: int  # EOS / stop token ids are ignored before this many output tokens
    ignore_eos: bool  # keep going past EOS/EOG
    stop_token_ids: SequenceABC[int] | None  # extra token ids that stop the sequence


class SequenceStatus(enum.Enum):
    WAITING = "waiting"  # in the waiting queue, no blocks (new or preempted)
    RUNNING = "running"  # admitted: holds blocks, prefilling or decoding
    FINISHED_STOPPED = "stop"  # EOS/EOG, a stop token id or a stop string
    FINISHED_LENGTH = "length"  # max_tokens or the end of the context
    FINISHED_ABORTED = "abort"  # abort(request_id)

    @property
    def is_finished(self) -> bool:
        return self not in (SequenceStatus.WAITING, SequenceStatus.RUNNING)


@dataclass(eq=False)
class Sequence:
    """One sequence. Mutable state; `eq=False` so identity is the object (and `seq_id`)."""

    seq_id: int  # unique in the scheduler
    request_id: str  # shared by the n samples of one request
    prompt_token_ids: tuple[int, ...]
    params: StopParams
    eos_token_ids: frozenset[int] = frozenset()  # EOS/EOG ids of the tokenizer
    sample_index: int = 0  # which of the request's n samples this is (0 = the first)
    status: SequenceStatus = SequenceStatus.WAITING
    token_ids: list[int] = field(default_factory=list)  # prompt + outputs; filled in __post_init__
    num_computed_tokens: int = 0  # tokens whose K/V is in the cache
    num_cached_tokens: int = 0  # tokens served by the prefix cache at the last admission
    block_table: list[int] = field(default_factory=list)  # block ids, position p -> [p // block_size]
    block_hashes: list[int] = field(default_factory=list)  # chained hash of each full block of token_ids
    num_hashed_blocks: int = 0  # leading blocks of block_table already offered to the prefix cache
    pending_forks: int = 0  # children still to fork at the first sample (n - 1, then 0)
    num_preemptions: int = 0
    stop_reason: int | str | None = None  # the stop token id, or "stop_string"

    def __post_init__(self) -> None:
        if not self.token_ids:
            self.token_ids = list(self.prompt_token_ids)

    @property
    def num_tokens(self) -> int:
        return len(self.token_ids)

    @property
    def num_prompt_tokens(self) -> int:
        return len(self.prompt_token_ids)

    @property
    def num_output_tokens(self) -> int:
        return len(self.token_ids) - len(self.prompt_token_ids)

    @property
    def output_token_ids(self) -> list[int]:
        return self.token_ids[len(self.prompt_token_ids):]

    @property
    def num_uncomputed_tokens(self) -> int:
        """Tokens to run before the next sample: 1 while decoding, more while (re)prefilling."""
        return len(self.token_ids) - self.num_computed_tokens

    @property
    def is_finished(self) -> bool:
        return self.status.is_finished

    @property
    def finish_reason(self) -> str | None:
        """"stop", "length", "abort" (vLLM's names), or None while unfinished."""
        return self.status.value if self.status.is_finished else None

    def fork(self, seq_id: int, sample_index: int) -> Sequence:
        """A child sharing everything computed so far; the block manager shares the blocks."""
        return Sequence(
            seq_id=seq_id,
            request_id=self.request_id,
            prompt_token_ids=self.prompt_token_ids,
            params=self.params,
            eos_token_ids=self.eos_token_ids,
            sample_index=sample_index,
            status=self.status,
            token_ids=list(self.token_ids),
            num_computed_tokens=self.num_computed_tokens,
            num_cached_tokens=self.num_cached_tokens,
            block_hashes=list(self.block_hashes),
            num_hashed_blocks=self.num_hashed_blocks,
        )
