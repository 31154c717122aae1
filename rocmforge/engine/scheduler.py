"""Scheduler: continuous batching with chunked prefill, prefix reuse and preemption by recompute.

One engine step is `plan = scheduler.schedule(); out = runner.execute(plan); scheduler.update(plan, out)`.

schedule() fills a token budget of `max_num_batched_tokens`, in this order:

1. running sequences that decode: 1 token each, in admission order;
2. running sequences still prefilling (chunked prefill): the rest of their prompt, cut to the budget;
3. waiting sequences, first come first served: prefix-cache hits first, then a chunk of the prompt
   (the whole prompt when `chunked_prefill` is off). Admission stops at the first sequence that
   does not fit (budget, `max_num_seqs`, or blocks) so no request is overtaken.

With `prefill_alone` (the engine's batch-invariant mode) a step is either one sequence's prefill
(chunk) or the decodes of every running sequence, never a mix: a prefill then computes exactly what
it computes for that request run alone, and every decode row goes through the same decode path.
Prefills go first (a waiting request is admitted before the running ones decode again).

When a running sequence needs a block and none is free, the most recently admitted running
sequence not yet scheduled this step is preempted by recompute: its blocks are freed, it goes back
to the front of the waiting queue with num_computed_tokens = 0 and keeps the tokens it generated;
re-admission prefills prompt + outputs (often from the prefix cache) and carries on. A step
that preempted admits nobody (the cache is short already).

update() advances the computed tokens, registers full blocks in the prefix cache, appends the
sampled tokens (only for entries that sample: the last prefill chunk or a decode), forks the
`n - 1` children on a request's first sample, checks the stop conditions and frees finished
sequences. Pure Python: no torch (STYLE rule 6).
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass

from rocmforge.cache.block_manager import BlockManager
from rocmforge.engine.plan import ScheduledSeq, SchedulePlan, StepOutput
from rocmforge.engine.sequence import Sequence, SequenceStatus, StopParams


@dataclass(frozen=True)
class SchedulerConfig:
    max_num_seqs: int = 64  # sequences in one step (and running at once), forks included
    max_num_batched_tokens: int = 2048  # token budget of one step (T of the flat forward)
    chunked_prefill: bool = True  # split long prompts across steps, mixed with decodes
    block_size: int = 16  # token slots per KV block
    num_blocks: int = 1024  # KV blocks in the cache
    max_model_len: int = 2048  # context length: prompt + output tokens at most
    enable_prefix_caching: bool = True  # reuse computed full blocks across sequences
    prefill_alone: bool = False  # a step is one sequence's prefill or only decodes (see the docstring)

    def __post_init__(self) -> None:
        for name in ("max_num_seqs", "max_num_batched_tokens", "block_size", "num_blocks", "max_model_len"):
            if getattr(self, name) < 1:
                raise ValueError(f"SchedulerConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.max_num_batched_tokens < self.max_num_seqs:
            raise ValueError(f"SchedulerConfig.max_num_batched_tokens ({self.max_num_batched_tokens}) "
                             f"must be >= max_num_seqs ({self.max_num_seqs}) so every running sequence "
                             f"can decode")
        if not self.chunked_prefill and self.max_num_batched_tokens < self.max_model_len:
            raise ValueError(f"without chunked prefill a whole prompt runs in one step: "
                             f"max_num_batched_tokens ({self.max_num_batched_tokens}) must be >= "
                             f"max_model_len ({self.max_model_len}); raise it or enable chunked_prefill")
        if self.num_blocks * self.block_size < self.max_model_len:
            raise ValueError(f"the KV cache holds {self.num_blocks} blocks x {self.block_size} = "
                             f"{self.num_blocks * self.block_size} tokens, fewer than max_model_len "
                             f"({self.max_model_len}); give the cache more memory or lower max_model_len")


class Scheduler:
    """Waiting and running queues over a BlockManager; see the module docstring."""

    def __init__(self, config: SchedulerConfig) -> None:
        self.config = config
        self.block_manager = BlockManager(config.num_blocks, config.block_size,
                                          enable_prefix_caching=config.enable_prefix_caching)
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []  # admission order: the last is preempted first
        self._seqs: dict[int, Sequence] = {}  # live sequences by id
        self._requests: dict[str, list[Sequence]] = {}  # live sequences by request id
        self._next_seq_id = itertools.count()
        self.num_preemptions = 0

    # ---- requests -----------------------------------------------------------------------
    def add_request(self, request_id: str, prompt_token_ids: Iterable[int], params: StopParams, *,
                    eos_token_ids: Iterable[int] = ()) -> Sequence:
        """Queue a request; it forks into params.n sequences at its first sample."""
        prompt = tuple(int(t) for t in prompt_token_ids)
        if not prompt:
            raise ValueError(f"request {request_id!r}: the prompt is empty; give at least one token")
        if len(prompt) > self.config.max_model_len:
            raise ValueError(f"request {request_id!r}: the prompt has {len(prompt)} tokens but the context "
                             f"holds {self.config.max_model_len} (max_model_len); shorten the prompt")
        if request_id in self._requests:
            raise ValueError(f"request id {request_id!r} is already in use; give each request its own id")
        if params.n < 1 or params.n > self.config.max_num_seqs:
            raise ValueError(f"request {request_id!r}: n={params.n} must be between 1 and max_num_seqs "
                             f"({self.config.max_num_seqs})")
        seq = Sequence(next(self._next_seq_id), request_id, prompt, params,
                       eos_token_ids=frozenset(eos_token_ids), pending_forks=params.n - 1)
        self.waiting.append(seq)
        self._seqs[seq.seq_id] = seq
        self._requests[request_id] = [seq]
        return seq

    def abort(self, request_id: str) -> list[Sequence]:
        """Finish every sequence of the request now ("abort") and free its blocks."""
        seqs = list(self._requests.get(request_id, ()))
        for seq in seqs:
            self._finish(seq, SequenceStatus.FINISHED_ABORTED)
        return seqs

    def stop_sequence(self, seq_id: int, reason: int | str = "stop_string") -> None:
        """Finish a sequence with "stop" from outside (a stop string the detokenizer found)."""
        seq = self._seqs.get(seq_id)
        if seq is not None:
            seq.stop_reason = reason
            self._finish(seq, SequenceStatus.FINISHED_STOPPED)

    def get_sequence(self, seq_id: int) -> Sequence | None:
        return self._seqs.get(seq_id)

    @property
    def has_unfinished(self) -> bool:
        return bool(self._seqs)

    # ---- schedule -----------------------------------------------------------------------
    def schedule(self) -> SchedulePlan:
        """Pick this step's sequences and token counts; allocates blocks and may preempt."""
        bm, budget = self.block_manager, self.config.max_num_batched_tokens
        entries: list[ScheduledSeq] = []
        copies: list[tuple[int, int]] = []
        preempted: list[int] = []
        done: set[int] = set()  # seq ids scheduled this step (not preemptible)

        def grow(seq: Sequence, n: int) -> bool:
            """Blocks for n more tokens of a running seq, preempting the newest; False = seq went too."""
            while (cow := bm.append_slots(seq, n)) is None:
                victim = next(s for s in reversed(self.running) if s.seq_id not in done)
                self._preempt(victim)
                preempted.append(victim.seq_id)
                if victim is seq:
                    return False
            copies.extend(cow)
            return True

        # NOTE: a list copy because grow() removes preempted sequences from self.running.
        decodes = [s for s in self.running if s.num_uncomputed_tokens == 1]
        prefills = [s for s in self.running if s.num_uncomputed_tokens > 1]
        if self.config.prefill_alone:
            alone = self._prefill_alone(prefills, budget)
            if alone is not None:
                return alone
            prefills = [] if decodes else prefills[:1]  # only when nothing decodes may a prefill preempt
        for seq in decodes + prefills:
            if seq.status is not SequenceStatus.RUNNING or budget == 0:
                continue  # preempted by an earlier sequence this step, or out of budget
            n = min(seq.num_uncomputed_tokens, budget)
            if grow(seq, n):
                entries.append(self._entry(seq, n))
                done.add(seq.seq_id)
                budget -= n

        while self.waiting and budget > 0 and not preempted and not self.config.prefill_alone:
            n = self._admit(budget)
            if n is None:
                break
            entries.append(self._entry(self.running[-1], n))
            done.add(self.running[-1].seq_id)
            budget -= n
        return SchedulePlan(seqs=tuple(entries), block_copies=tuple(copies),
                            preempted_seq_ids=tuple(preempted))

    def _prefill_alone(self, prefills: list[Sequence], budget: int) -> SchedulePlan | None:
        """prefill_alone: the next chunk of the first running prefill, else the first chunk of the first
        waiting sequence, as a step of its own; None when neither fits in the free blocks as they are
        (then the decodes run, and may preempt to go on)."""
        if prefills:
            seq = prefills[0]
            n = min(seq.num_uncomputed_tokens, budget)
            cow = self.block_manager.append_slots(seq, n)
            return None if cow is None else SchedulePlan(seqs=(self._entry(seq, n),), block_copies=tuple(cow))
        if self.waiting and (n := self._admit(budget)) is not None:
            return SchedulePlan(seqs=(self._entry(self.running[-1], n),))
        return None

    def _admit(self, budget: int) -> int | None:
        """Admit the first waiting sequence (to the end of `running`) with its prefix-cache hits and
        up to `budget` prompt tokens; -> the tokens it computes this step, or None if it cannot start
        (max_num_seqs with its forks, the budget without chunked prefill, or blocks)."""
        seq = self.waiting[0]
        reserved = sum(1 + s.pending_forks for s in self.running)
        if reserved + 1 + seq.pending_forks > self.config.max_num_seqs:
            return None
        cached = self.block_manager.find_cached_prefix(seq)
        n = seq.num_tokens - len(cached) * self.config.block_size
        if n > budget and not self.config.chunked_prefill:
            return None
        n = min(n, budget)
        if not self.block_manager.allocate(seq, n, cached):
            return None
        self.waiting.popleft()
        seq.status = SequenceStatus.RUNNING
        self.running.append(seq)
        return n

    def _entry(self, seq: Sequence, n: int) -> ScheduledSeq:
        start = seq.num_computed_tokens
        sample = start + n == seq.num_tokens
        return ScheduledSeq(
            seq_id=seq.seq_id,
            token_ids=tuple(seq.token_ids[start:start + n]),
            start_pos=start,
            context_len=start + n,
            block_table=tuple(seq.block_table),
            sample=sample,
            num_samples=1 + seq.pending_forks if sample else 1,
        )

    def _preempt(self, seq: Sequence) -> None:
        self.block_manager.free(seq)
        self.running.remove(seq)
        seq.status = SequenceStatus.WAITING
        seq.num_computed_tokens = 0
        seq.num_cached_tokens = 0
        seq.num_preemptions += 1
        self.num_preemptions += 1
        self.waiting.appendleft(seq)

    # ---- update -------------------------------------------------------------------------
    def update(self, plan: SchedulePlan, out: StepOutput) -> list[Sequence]:
        """Apply one executed plan; returns the sequences that finished in this step."""
        finished: list[Sequence] = []
        for e in plan.seqs:
            seq = self._seqs.get(e.seq_id)
            if seq is None or seq.status is not SequenceStatus.RUNNING:
                continue  # aborted or stopped between schedule and update
            seq.num_computed_tokens = e.context_len
            self.block_manager.cache_full_blocks(seq)
            if not e.sample:
                continue
            tokens = tuple(out.sampled_token_ids.get(e.seq_id, ()))
            if len(tokens) != e.num_samples:
                raise ValueError(f"StepOutput for sequence {e.seq_id} has {len(tokens)} sampled tokens; "
                                 f"the plan asked for {e.num_samples}")
            family = [seq] + [self._fork(seq, i) for i in range(1, e.num_samples)]
            seq.pending_forks = 0
            for s, tok in zip(family, tokens):
                s.token_ids.append(int(tok))
                status = self._stop_status(s, int(tok), s is seq and e.seq_id in out.stopped)
                if status is not None:
                    self._finish(s, status)
                    finished.append(s)
        return finished

    def _fork(self, parent: Sequence, sample_index: int) -> Sequence:
        child = parent.fork(next(self._next_seq_id), sample_index)
        self.block_manager.fork(parent, child)
        self.running.append(child)
        self._seqs[child.seq_id] = child
        self._requests[child.request_id].append(child)
        return child

    def _stop_status(self, seq: Sequence, tok: int, stop_string: bool) -> SequenceStatus | None:
        p = seq.params
        if stop_string:
            seq.stop_reason = "stop_string"
            return SequenceStatus.FINISHED_STOPPED
        if seq.num_output_tokens >= p.min_tokens:
            if not p.ignore_eos and tok in seq.eos_token_ids:
                return SequenceStatus.FINISHED_STOPPED
            if p.stop_token_ids and tok in p.stop_token_ids:
                seq.stop_reason = tok
                return SequenceStatus.FINISHED_STOPPED
        if p.max_tokens is not None and seq.num_output_tokens >= p.max_tokens:
            return SequenceStatus.FINISHED_LENGTH
        if seq.num_tokens >= self.config.max_model_len:
            return SequenceStatus.FINISHED_LENGTH
        return None

    def _finish(self, seq: Sequence, status: SequenceStatus) -> None:
        if seq.status is SequenceStatus.RUNNING:
            self.running.remove(seq)
        elif seq.status is SequenceStatus.WAITING:
            self.waiting.remove(seq)
        self.block_manager.free(seq)
        seq.status = status
        del self._seqs[seq.seq_id]
        family = self._requests[seq.request_id]
        family.remove(seq)
        if not family:
            del self._requests[seq.request_id]
