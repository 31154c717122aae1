"""Scheduler: budget, chunked prefill, preemption, prefix reuse, forks, stops, abort; no torch.

The fake runner keeps a token-level KV cache: it applies the plan's block copies, writes each new
token into its slot, then "samples" from the context it reads back through the block table
(positions checked), so a wrong table, a missed copy-on-write or a block reused too early changes
the tokens. The reference generates the same deterministic tokens directly from the token list,
with the stop rules written out again here, independently of the scheduler.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace

import pytest

from rocmforge.engine.plan import ScheduledSeq, SchedulePlan, StepOutput, flatten
from rocmforge.engine.scheduler import Scheduler, SchedulerConfig
from rocmforge.engine.sequence import Sequence

VOCAB, EOS = 97, 0


@dataclass(frozen=True)
class Params:
    n: int = 1
    max_tokens: int | None = 8
    min_tokens: int = 0
    ignore_eos: bool = True
    stop_token_ids: tuple[int, ...] | None = None


def next_token(context: list[int], sample_index: int) -> int:
    """The fake model: a deterministic function of the whole context (and which sample)."""
    return hash((tuple(context), sample_index)) % VOCAB


class FakeRunner:
    def __init__(self, cfg: SchedulerConfig) -> None:
        self.bs, self.cfg = cfg.block_size, cfg
        self.slots: list[list[tuple[int, int] | None]] = [[None] * self.bs for _ in range(cfg.num_blocks)]
        self.plans: list[SchedulePlan] = []

    def execute(self, plan: SchedulePlan) -> StepOutput:
        """Runs the plan through its flat layout, as the model runner does."""
        self.plans.append(plan)
        for src, dst in plan.block_copies:
            self.slots[dst] = list(self.slots[src])
        fb = flatten(plan, self.bs)
        assert len(set(fb.slot_mapping)) == len(fb.slot_mapping), "two tokens of one step share a slot"
        for tok, pos, slot in zip(fb.input_ids, fb.positions, fb.slot_mapping, strict=True):
            self.slots[slot // self.bs][slot % self.bs] = (tok, pos)
        seq_of_row = {}
        for s in range(len(fb.seq_lens)):
            assert len(fb.block_tables[s]) == -(-fb.seq_lens[s] // self.bs)  # exactly the blocks in use
            seq_of_row[fb.query_start_loc[s + 1] - 1] = s
        num_samples = {e.seq_id: e.num_samples for e in plan.seqs}
        sampled = {}
        for row, seq_id in zip(fb.logits_indices, fb.sample_seq_ids, strict=True):
            s = seq_of_row[row]  # the last new token of sequence s
            table, context = fb.block_tables[s], []
            for p in range(fb.seq_lens[s]):
                tok, pos = self.slots[table[p // self.bs]][p % self.bs]
                assert pos == p, f"seq {seq_id} reads position {pos} at {p}"
                context.append(tok)
            assert context[-1] == fb.input_ids[row]
            sampled[seq_id] = tuple(next_token(context, k) for k in range(num_samples[seq_id]))
        return StepOutput(sampled_token_ids=sampled)


def reference(prompt: list[int], p: Params, max_model_len: int, eos: frozenset[int]) -> list[tuple]:
    """(output tokens, finish reason) of each of the n samples, generated directly."""
    outs = []
    for k in range(p.n):
        toks = list(prompt)
        while True:
            t = next_token(toks, k if len(toks) == len(prompt) else 0)
            toks.append(t)
            n_out = len(toks) - len(prompt)
            if n_out >= p.min_tokens and ((not p.ignore_eos and t in eos) or t in (p.stop_token_ids or ())):
                reason = "stop"
            elif (p.max_tokens is not None and n_out >= p.max_tokens) or len(toks) >= max_model_len:
                reason = "length"
            else:
                continue
            outs.append((toks[len(prompt):], reason))
            break
    return outs


def run_all(sched: Scheduler, runner: FakeRunner, max_steps: int = 10_000) -> list[Sequence]:
    cfg, finished = sched.config, []
    for _ in range(max_steps):
        if not sched.has_unfinished:
            return finished
        plan = sched.schedule()
        assert plan.num_batched_tokens <= cfg.max_num_batched_tokens
        assert 0 < plan.num_seqs <= cfg.max_num_seqs
        assert len(sched.running) <= cfg.max_num_seqs
        finished += sched.update(plan, runner.execute(plan))
        sched.block_manager.check_invariants()
    raise AssertionError("the workload did not finish")


def results(finished: list[Sequence]) -> dict[tuple[str, int], tuple]:
    return {(s.request_id, s.sample_index): (s.output_token_ids, s.finish_reason) for s in finished}


def expected(requests: dict[str, tuple[list[int], Params]], max_model_len: int,
             eos: frozenset[int] = frozenset()) -> dict[tuple[str, int], tuple]:
    return {(rid, k): out for rid, (prompt, p) in requests.items()
            for k, out in enumerate(reference(prompt, p, max_model_len, eos))}


def submit(sched: Scheduler, requests: dict[str, tuple[list[int], Params]]) -> None:
    for rid, (prompt, p) in requests.items():
        sched.add_request(rid, prompt, p)


def assert_all_free(sched: Scheduler) -> None:
    bm = sched.block_manager
    assert bm.num_free_blocks == bm.num_blocks and bm.usage == 0.0
    assert all(bm.ref_count(b) == 0 for b in range(bm.num_blocks))
    assert not sched.running and not sched.waiting


def cfg(**kw) -> SchedulerConfig:
    base = dict(max_num_seqs=8, max_num_batched_tokens=64, chunked_prefill=True, block_size=4,
                num_blocks=64, max_model_len=64)
    return SchedulerConfig(**{**base, **kw})


def test_admission_within_budget_whole_prompts() -> None:
    c = cfg(chunked_prefill=False, max_num_batched_tokens=64)
    sched, runner = Scheduler(c), FakeRunner(c)
    reqs = {f"r{i}": (list(range(10 * i, 10 * i + 30)), Params(max_tokens=3)) for i in range(3)}
    submit(sched, reqs)
    plan = sched.schedule()
    assert [e.query_len for e in plan.seqs] == [30, 30]  # the third (30 > 4 left) waits, uncut
    assert all(e.sample and e.start_pos == 0 for e in plan.seqs)
    sched.update(plan, runner.execute(plan))
    plan = sched.schedule()  # 2 decodes first, then the third prompt
    assert [e.query_len for e in plan.seqs] == [1, 1, 30]
    sched.update(plan, runner.execute(plan))
    assert results(run_all(sched, runner)) == expected(reqs, c.max_model_len)
    assert_all_free(sched)


def test_max_num_seqs_caps_running() -> None:
    c = cfg(max_num_seqs=2)
    sched, runner = Scheduler(c), FakeRunner(c)
    reqs = {f"r{i}": ([i + 1] * 5, Params(max_tokens=4)) for i in range(5)}
    submit(sched, reqs)
    plan = sched.schedule()
    assert plan.num_seqs == 2 and len(sched.waiting) == 3
    finished = sched.update(plan, runner.execute(plan)) + run_all(sched, runner)  # run_all checks the cap
    assert results(finished) == expected(reqs, c.max_model_len)
    assert_all_free(sched)


def test_chunked_prefill_splits_and_mixes_with_decode() -> None:
    c = cfg(max_num_batched_tokens=16, num_blocks=40, max_model_len=128)
    sched, runner = Scheduler(c), FakeRunner(c)
    reqs = {"short": ([5, 6, 7], Params(max_tokens=12)), "long": (list(range(1, 51)), Params(max_tokens=3))}
    submit(sched, reqs)
    finished = run_all(sched, runner)
    long_id = next(s.seq_id for s in finished if s.request_id == "long")
    chunks = [(i, e) for i, p in enumerate(runner.plans) for e in p.seqs if e.seq_id == long_id and not (
        e.sample and e.query_len == 1 and e.start_pos >= 50)]
    starts = [e.start_pos for _, e in chunks]
    assert starts == [0, 13, 28, 43] and [e.query_len for _, e in chunks] == [13, 15, 15, 7]
    assert [e.sample for _, e in chunks] == [False, False, False, True]
    for i, _ in chunks[1:]:  # the short request decodes in the same steps
        assert [e.query_len for e in runner.plans[i].seqs][0] == 1 and runner.plans[i].num_seqs == 2
    assert all(p.num_batched_tokens <= 16 for p in runner.plans)
    assert results(finished) == expected(reqs, c.max_model_len)
    assert_all_free(sched)


@pytest.mark.parametrize("chunked", [True, False])
def test_preemption_then_requests_finish_correctly(chunked: bool) -> None:
    c = cfg(max_num_seqs=4, num_blocks=16, max_model_len=64, chunked_prefill=chunked)
    sched, runner = Scheduler(c), FakeRunner(c)
    # 4 running x 32 tokens > 64 slots; a 5th request waits behind the victim
    reqs = {f"r{i}": ([i + 1] * 7 + [i + 2], Params(max_tokens=24)) for i in range(5)}
    submit(sched, reqs)
    finished: list[Sequence] = []
    for _ in range(100):
        if sched.num_preemptions:
            break
        admitted = [s.seq_id for s in sched.running]
        plan = sched.schedule()
        finished += sched.update(plan, runner.execute(plan))
    victim = sched.waiting[0]  # back at the front of the queue, nothing computed, no blocks
    assert len(sched.waiting) == 2 and sched.waiting[1].request_id == "r4"
    assert plan.preempted_seq_ids[0] == victim.seq_id == admitted[-1]  # the last admitted goes first
    assert victim.num_computed_tokens == 0 and victim.block_table == [] and victim.num_output_tokens > 0
    assert victim.seq_id not in {e.seq_id for e in plan.seqs}
    finished += run_all(sched, runner)
    assert results(finished) == expected(reqs, c.max_model_len)
    assert any(s.num_preemptions for s in finished)
    assert_all_free(sched)


def test_prefix_reuse_between_requests() -> None:
    c = cfg()
    sched, runner = Scheduler(c), FakeRunner(c)
    shared = list(range(30, 42))  # 3 full blocks
    reqs = {"a": (shared + [1, 2], Params(max_tokens=2)), "b": (shared + [3], Params(max_tokens=2))}
    sched.add_request("a", *reqs["a"])
    first = run_all(sched, runner)
    hits_before = sched.block_manager.num_prefix_hits
    b = sched.add_request("b", *reqs["b"])
    plan = sched.schedule()
    assert b.num_cached_tokens == 12 and plan.seqs[0].start_pos == 12 and plan.seqs[0].query_len == 1
    assert sched.block_manager.num_prefix_hits == hits_before + 3
    second = sched.update(plan, runner.execute(plan))
    second += run_all(sched, runner)
    assert results(first + second) == expected(reqs, c.max_model_len)
    assert_all_free(sched)


def test_fork_n_samples_copy_on_write() -> None:
    c = cfg()
    sched, runner = Scheduler(c), FakeRunner(c)
    reqs = {"r": ([9, 8, 7, 6, 5, 4], Params(n=3, max_tokens=6))}  # partial last block shared by 3
    submit(sched, reqs)
    finished = run_all(sched, runner)
    assert runner.plans[0].seqs[0].num_samples == 3
    assert len(runner.plans[1].block_copies) == 2  # two of the three writers copy, the last writes in place
    assert results(finished) == expected(reqs, c.max_model_len)
    assert len({tuple(s.output_token_ids) for s in finished}) == 3
    assert_all_free(sched)


def test_stop_conditions() -> None:
    c = cfg(max_model_len=20)
    prompt = [3, 1, 4, 1, 5]
    toks = reference(prompt, Params(max_tokens=None), 20, frozenset())[0][0]  # 15 tokens to the context end
    eos = frozenset({toks[2]})
    reqs = {
        "eos": (prompt, Params(max_tokens=None, ignore_eos=False)),
        "ignore_eos": (prompt, Params(max_tokens=None, ignore_eos=True)),
        "min_tokens": (prompt, Params(max_tokens=None, ignore_eos=False, min_tokens=5)),
        "stop_id": (prompt, Params(max_tokens=None, stop_token_ids=(toks[4],))),
        "max_tokens": (prompt, Params(max_tokens=2)),
    }
    sched, runner = Scheduler(c), FakeRunner(c)
    for rid, (pr, p) in reqs.items():
        sched.add_request(rid, pr, p, eos_token_ids=eos)
    got = results(run_all(sched, runner))
    assert got == expected(reqs, 20, eos)
    assert got[("eos", 0)] == (toks[:3], "stop") and got[("max_tokens", 0)] == (toks[:2], "length")
    assert got[("ignore_eos", 0)][1] == "length" and len(got[("ignore_eos", 0)][0]) == 15
    assert_all_free(sched)


def test_stopped_flag_and_stop_sequence() -> None:
    c = cfg()
    sched, runner = Scheduler(c), FakeRunner(c)
    a = sched.add_request("a", [1, 2, 3], Params(max_tokens=10))
    b = sched.add_request("b", [4, 5, 6], Params(max_tokens=10))
    plan = sched.schedule()
    out = runner.execute(plan)
    done = sched.update(plan, replace(out, stopped=frozenset({a.seq_id})))
    assert done == [a] and a.finish_reason == "stop" and a.num_output_tokens == 1
    sched.stop_sequence(b.seq_id)
    assert b.finish_reason == "stop" and b.stop_reason == "stop_string"
    assert_all_free(sched)


def test_abort_frees_blocks() -> None:
    c = cfg(max_num_seqs=2)
    sched, runner = Scheduler(c), FakeRunner(c)
    for i in range(3):
        sched.add_request(f"r{i}", list(range(10)), Params(n=2 if i == 0 else 1, max_tokens=10))
    for _ in range(3):
        plan = sched.schedule()
        sched.update(plan, runner.execute(plan))
    assert sched.block_manager.usage > 0 and len(sched.waiting) == 2
    aborted = sched.abort("r0")  # both running samples
    assert len(aborted) == 2 and all(s.finish_reason == "abort" for s in aborted)
    assert sched.abort("r2")[0].finish_reason == "abort"  # a waiting one
    assert sched.abort("nope") == []
    plan = sched.schedule()  # r1 is admitted; aborted before update: its entry is ignored
    assert [e.seq_id for e in plan.seqs] == [sched.running[0].seq_id]
    out = runner.execute(plan)
    assert sched.abort("r1")[0].num_output_tokens == 0 and sched.update(plan, out) == []
    sched.add_request("r3", list(range(10)), Params(max_tokens=3))
    run_all(sched, runner)
    assert_all_free(sched)


def test_flatten_follows_the_attention_contract() -> None:
    plan = SchedulePlan(seqs=(
        ScheduledSeq(seq_id=4, token_ids=(11,), start_pos=5, context_len=6, block_table=(7, 2), sample=True),
        ScheduledSeq(seq_id=9, token_ids=(1, 2, 3), start_pos=2, context_len=5, block_table=(0, 3),
                     sample=False),
        ScheduledSeq(seq_id=1, token_ids=(5, 6), start_pos=0, context_len=2, block_table=(6,), sample=True,
                     num_samples=2),
    ))
    fb = flatten(plan, block_size=4)
    assert fb.input_ids == [11, 1, 2, 3, 5, 6] and fb.positions == [5, 2, 3, 4, 0, 1]
    # position p -> block_table[p // 4] * 4 + p % 4
    assert fb.slot_mapping == [2 * 4 + 1, 0 * 4 + 2, 0 * 4 + 3, 3 * 4 + 0, 6 * 4 + 0, 6 * 4 + 1]
    assert fb.query_start_loc == [0, 1, 4, 6] and fb.seq_lens == [6, 5, 2]
    assert fb.logits_indices == [0, 5] and fb.sample_seq_ids == [4, 1]
    assert plan.num_batched_tokens == 6 and plan.sampled_seq_ids == [4, 1]


def test_bad_requests_and_configs_say_what_to_do() -> None:
    sched = Scheduler(cfg(max_model_len=16))
    with pytest.raises(ValueError, match="17 tokens.*shorten"):
        sched.add_request("x", list(range(17)), Params())
    with pytest.raises(ValueError, match="empty"):
        sched.add_request("x", [], Params())
    sched.add_request("x", [1], Params())
    with pytest.raises(ValueError, match="already in use"):
        sched.add_request("x", [2], Params())
    with pytest.raises(ValueError, match="chunked_prefill"):
        cfg(chunked_prefill=False, max_num_batched_tokens=32, max_model_len=64)
    with pytest.raises(ValueError, match="max_model_len"):
        cfg(num_blocks=4, block_size=4, max_model_len=64)
    with pytest.raises(ValueError, match="max_num_seqs"):
        cfg(max_num_seqs=100, max_num_batched_tokens=64)


def _chunks(plans: list[SchedulePlan], prompt_len: dict[int, int]) -> dict[int, list[tuple[int, int]]]:
    """seq id -> the (start, length) of each step that computed part of its prompt."""
    out: dict[int, list[tuple[int, int]]] = {}
    for plan in plans:
        for e in plan.seqs:
            if e.start_pos < prompt_len.get(e.seq_id, 0):
                out.setdefault(e.seq_id, []).append((e.start_pos, e.query_len))
    return out


def test_prefill_alone_steps_never_mix_and_cut_prompts_as_alone() -> None:
    """Batch-invariant scheduling: every step is one sequence's prefill chunk or only one-token
    entries; each prompt is cut into the same chunks as when its request runs alone; outputs exact."""
    c = cfg(max_num_seqs=4, max_num_batched_tokens=8, prefill_alone=True)
    reqs = {f"r{i}": (list(range(1 + 5 * i, 7 + 12 * i)), Params(max_tokens=3 + i)) for i in range(6)}
    sched, runner = Scheduler(c), FakeRunner(c)
    submit(sched, reqs)
    finished = run_all(sched, runner)
    assert results(finished) == expected(reqs, c.max_model_len)
    for plan in runner.plans:
        assert len(plan.seqs) == 1 or all(e.query_len == 1 for e in plan.seqs), plan
    ids = {s.request_id: s.seq_id for s in finished}
    together = _chunks(runner.plans, {ids[r]: len(p) for r, (p, _) in reqs.items()})
    assert any(len(v) > 1 for v in together.values())  # some prompts do take several chunks
    for rid, (prompt, p) in reqs.items():
        alone_s, alone_r = Scheduler(c), FakeRunner(c)
        seq = alone_s.add_request(rid, prompt, p)
        run_all(alone_s, alone_r)
        assert _chunks(alone_r.plans, {seq.seq_id: len(prompt)})[seq.seq_id] == together[ids[rid]]


@pytest.mark.parametrize("seed,chunked,caching,alone", [(0, True, True, False), (1, False, True, False),
                                                        (2, True, False, False), (3, True, True, False),
                                                        (4, True, False, True)])
def test_random_workload(seed: int, chunked: bool, caching: bool, alone: bool) -> None:
    """Random arrivals, lengths, shared prefixes, n > 1, tight cache: exact outputs, all blocks free."""
    rng = random.Random(seed)
    c = cfg(max_num_seqs=6, max_num_batched_tokens=64 if not chunked else rng.choice([8, 16, 32]),
            num_blocks=20, block_size=4, max_model_len=64, chunked_prefill=chunked,
            enable_prefix_caching=caching, prefill_alone=alone)
    sched, runner = Scheduler(c), FakeRunner(c)
    prefixes = [[rng.randrange(1, VOCAB) for _ in range(rng.randrange(4, 20))] for _ in range(3)]
    pending = []
    for i in range(24):
        prompt = rng.choice(prefixes)[: rng.randrange(1, 20)] + [rng.randrange(1, VOCAB) for _ in range(3)]
        p = Params(n=rng.choice([1, 1, 1, 2, 3]), max_tokens=rng.choice([1, 5, 20, None]),
                   ignore_eos=rng.random() < 0.5)
        pending.append((rng.randrange(0, 60), f"r{i}", prompt, p))
    pending.sort(key=lambda x: x[0])
    eos = frozenset({EOS, 1, 2})
    finished, step = [], 0
    while pending or sched.has_unfinished:
        while pending and pending[0][0] <= step:
            _, rid, prompt, p = pending.pop(0)
            sched.add_request(rid, prompt, p, eos_token_ids=eos)
        plan = sched.schedule()
        assert plan.num_batched_tokens <= c.max_num_batched_tokens and plan.num_seqs <= c.max_num_seqs
        finished += sched.update(plan, runner.execute(plan))
        sched.block_manager.check_invariants()
        step += 1
        assert step < 5000
    reqs = {rid: (prompt, p) for _, rid, prompt, p in sorted(
        [(0, s.request_id, list(s.prompt_token_ids), s.params) for s in finished])}
    assert results(finished) == expected(reqs, c.max_model_len, eos)
    assert len(finished) == sum(p.n for _, p in reqs.values()) and len(reqs) == 24
    assert sched.num_preemptions > 0
    if caching:
        assert sched.block_manager.num_prefix_hits > 0
    assert_all_free(sched)
