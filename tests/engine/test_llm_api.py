"""The LLM API end to end on the real SmolLM2 GGUF (CPU).

References are independent of the engine: a plain greedy loop that re-runs the whole sequence
through the model each step (no KV reuse, no scheduler, no sampler), and log_softmax of logits from
one full forward. Tolerances: the engine's decode reads K/V from the paged cache while the reference
recomputes them, the same float32 math in a different order: logprobs agree to 1e-3.
"""

from __future__ import annotations

import pytest
import torch

from rocmforge.attention.metadata import build_metadata
from rocmforge.cache.kv_cache import allocate_kv_cache
from rocmforge.engine.outputs import IncrementalText
from rocmforge.sampling_params import SamplingParams

MAX_LEN = 256
PROMPT = "The capital of France is"


@pytest.fixture(scope="module")
def llm():
    from rocmforge.hub import ModelNotFoundError, resolve_model

    try:
        resolve_model("smollm2")
    except ModelNotFoundError as e:
        pytest.skip(f"SmolLM2 GGUF not available: {e}")
    from rocmforge import LLM

    return LLM("smollm2", device="cpu", max_model_len=MAX_LEN, kv_cache_tokens=2048, seed=0)


def full_logits(llm, ids: list[int]) -> torch.Tensor:
    """(T, V) logits of one fresh forward over `ids` (its own cache, every position)."""
    bs, T = 16, len(ids)
    nb = -(-T // bs)
    kv = allocate_kv_cache(llm.model_config, nb, bs)
    meta = build_metadata([T], [0], [list(range(nb))], bs, kv, "cpu", logits="all")
    with torch.inference_mode():
        return llm.model(torch.tensor(ids), torch.arange(T), meta).float()


def greedy_reference(llm, ids: list[int], n: int) -> list[int]:
    ids, out = list(ids), []
    for _ in range(n):
        tok = int(full_logits(llm, ids)[-1].argmax())
        out.append(tok)
        ids.append(tok)
    return out


def greedy(max_tokens=8, **kw) -> SamplingParams:
    return SamplingParams(temperature=0.0, max_tokens=max_tokens, ignore_eos=True, **kw)


def test_incremental_text_holds_back_possible_stop_prefixes():
    t = IncrementalText(("###",))
    assert not t.append("ab#") and t.delta() == "ab"  # "#" may start "###"
    assert not t.append("#") and t.delta() == ""
    assert t.append("#c") and t.matched == "###" and t.text == "ab"
    assert t.delta(final=True) == ""
    t = IncrementalText(("###",))
    t.append("ab#")
    t.delta()
    t.append("x")
    assert t.delta() == "#x" and t.matched is None
    t = IncrementalText(("###",), include_stop=True)
    t.append("ab##")
    assert t.append("#tail") and t.text == "ab###"
    t = IncrementalText(("c", "ab"))
    assert t.append("xabc") and (t.text, t.matched) == ("x", "ab")  # the earliest match wins
    t = IncrementalText()
    t.append("plain")
    assert t.delta() == "plain"
    assert not t.append("more") and t.delta() == "more"


def test_chat_answers_paris(llm):
    out = llm.chat([{"role": "user", "content": "What is the capital of France?"}],
                   SamplingParams(temperature=0.0, max_tokens=24))[0]
    assert "Paris" in out.outputs[0].text
    assert out.prompt.endswith("<|im_start|>assistant\n")
    assert out.outputs[0].finish_reason in ("stop", "length")


def test_greedy_matches_full_recompute_and_is_deterministic(llm):
    ref = greedy_reference(llm, llm.tokenize(PROMPT), 8)
    a = llm.generate(PROMPT, greedy())[0]
    b = llm.generate(PROMPT, greedy())[0]
    assert a.outputs[0].token_ids == ref == b.outputs[0].token_ids
    assert a.outputs[0].text == llm.detokenize(ref, skip_special=True)
    assert a.prompt_token_ids == llm.tokenize(PROMPT)


def test_batched_prompts_equal_single_runs(llm):
    prompts = [PROMPT, "Once upon a time, in a small village,", "1, 2, 3, 4,"]
    batch = llm.generate(prompts, greedy(6))
    for p, out in zip(prompts, batch):
        assert out.prompt == p
        assert out.outputs[0].token_ids == greedy_reference(llm, llm.tokenize(p), 6)


def test_seed_reproducibility(llm):
    sp = SamplingParams(temperature=1.0, max_tokens=12, ignore_eos=True, seed=123)
    a = llm.generate(PROMPT, sp)[0].outputs[0].token_ids
    b = llm.generate(PROMPT, sp)[0].outputs[0].token_ids
    c = llm.generate(PROMPT, SamplingParams(temperature=1.0, max_tokens=12, ignore_eos=True, seed=124))
    assert a == b
    assert c[0].outputs[0].token_ids != a


def test_n2_greedy_forks_equal_single_and_sampled_differ(llm):
    single = llm.generate(PROMPT, greedy(6))[0].outputs[0].token_ids
    two = llm.generate(PROMPT, greedy(6, n=2))[0]
    assert [o.index for o in two.outputs] == [0, 1]
    assert two.outputs[0].token_ids == single == two.outputs[1].token_ids
    sp = SamplingParams(n=2, temperature=1.5, max_tokens=8, ignore_eos=True, seed=5)
    sampled = llm.generate(PROMPT, sp)
    a, b = (o.token_ids for o in sampled[0].outputs)
    assert len(a) == len(b) == 8 and a != b


def test_max_tokens_gives_length(llm):
    o = llm.generate(PROMPT, greedy(3))[0].outputs[0]
    assert len(o.token_ids) == 3 and o.finish_reason == "length"


def test_stop_string_across_token_boundary(llm):
    base = llm.generate(PROMPT, greedy(16))[0].outputs[0]
    pieces = [llm.detokenize([t]) for t in base.token_ids]
    # a boundary with at least 2 characters on each side, whose straddling string first occurs there
    for i in range(1, len(pieces)):
        left, right = pieces[i - 1], pieces[i]
        if len(left) >= 2 and len(right) >= 2:
            stop = left[-2:] + right[:2]
            at = len("".join(pieces[:i])) - 2
            if base.text.find(stop) == at:
                break
    else:
        pytest.fail(f"no usable token boundary in {pieces}")
    o = llm.generate(PROMPT, greedy(16, stop=[stop, "zzzz-never"]))[0].outputs[0]
    assert (o.text, o.finish_reason, o.stop_reason) == (base.text[:at], "stop", stop)
    assert o.token_ids == base.token_ids[: i + 1]  # ends with the token that completed the stop string
    kept = llm.generate(PROMPT, greedy(16, stop=stop, include_stop_str_in_output=True))[0].outputs[0]
    assert kept.text == base.text[: at + len(stop)]
    streamed = "".join(llm.stream(PROMPT, greedy(16, stop=[stop])))
    assert streamed == o.text


def test_min_tokens_masks_eos(llm):
    msgs = [{"role": "user", "content": "What is the capital of France?"}]
    free = llm.chat(msgs, SamplingParams(temperature=0.0, max_tokens=24))[0].outputs[0]
    assert free.finish_reason == "stop" and free.token_ids[-1] in llm.tokenizer.eog_ids
    n = len(free.token_ids) + 2
    forced = llm.chat(msgs, SamplingParams(temperature=0.0, max_tokens=n, min_tokens=n))[0].outputs[0]
    assert len(forced.token_ids) == n and not set(forced.token_ids) & set(llm.tokenizer.eog_ids)
    assert forced.token_ids[: len(free.token_ids) - 1] == free.token_ids[:-1]


def test_logprobs_equal_log_softmax_of_model(llm):
    ids = llm.tokenize(PROMPT)
    out = llm.generate(PROMPT, greedy(4, logprobs=3, prompt_logprobs=2))[0]
    o = out.outputs[0]
    lp = torch.log_softmax(full_logits(llm, ids + o.token_ids[:-1]), dim=-1)  # (T + 3, V)
    assert len(o.logprobs) == 4
    for step, (d, tok) in enumerate(zip(o.logprobs, o.token_ids)):
        row = lp[len(ids) - 1 + step]
        assert tok in d and set(row.topk(3).indices.tolist()) <= set(d) and len(d) <= 4
        for t, v in d.items():
            assert v == pytest.approx(float(row[t]), abs=1e-3)
    assert o.cumulative_logprob == pytest.approx(sum(d[t] for d, t in zip(o.logprobs, o.token_ids)))
    pl = out.prompt_logprobs
    assert len(pl) == len(ids) and pl[0] is None
    for i in range(1, len(ids)):
        assert ids[i] in pl[i] and len(pl[i]) <= 3
        for t, v in pl[i].items():
            assert v == pytest.approx(float(lp[i - 1, t]), abs=1e-3)


def test_prompt_longer_than_context(llm):
    ids = llm.tokenize("word " * (MAX_LEN + 10))
    assert len(ids) > MAX_LEN
    with pytest.raises(ValueError, match=rf"{len(ids)} tokens.*{MAX_LEN}.*max_model_len"):
        llm.generate([ids], greedy(4))
    with pytest.raises(ValueError, match="max_model_len"):
        list(llm.stream(ids, greedy(4)))


def test_context_end_gives_length(llm):
    ids = llm.tokenize("word " * 400)[: MAX_LEN - 3]
    o = llm.generate([ids], greedy(50))[0].outputs[0]
    assert o.finish_reason == "length" and len(ids) + len(o.token_ids) == MAX_LEN


def test_stream_equals_final_text(llm):
    sp = SamplingParams(temperature=0.7, max_tokens=12, seed=9, ignore_eos=True)
    deltas = list(llm.stream("Once upon a time", sp))
    final = llm.generate("Once upon a time", sp)[0].outputs[0]
    assert "".join(deltas) == final.text == llm.last_output.outputs[0].text
    assert len(deltas) > 1


def test_chat_without_template_is_a_clear_error(llm, monkeypatch):
    monkeypatch.setattr(llm, "chat_template", None)
    with pytest.raises(ValueError, match="no chat template"):
        llm.chat([{"role": "user", "content": "hi"}])


def test_bad_inputs(llm):
    with pytest.raises(ValueError, match="one per prompt"):
        llm.generate(["a", "b"], [SamplingParams()] * 3)
    with pytest.raises(ValueError, match="outside the vocabulary"):
        llm.generate([[1, 10**7]])
    with pytest.raises(ValueError, match="empty"):
        llm.generate([[]])
