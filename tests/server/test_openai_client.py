"""The server through the official `openai` client, against the engine itself (`LLM.chat` / `generate`).

References: the same LLM object, called in the engine thread (`Server.reference`), without HTTP,
so greedy text, token counts and logprobs must match exactly (same float32 math, same engine).
Token counts are checked against our tokenizer on the rendered prompt, computed here.
Structured output is checked with `jsonschema`, independent of xgrammar.
"""

from __future__ import annotations

import json

import httpx
import pytest

from rocmforge.sampling_params import SamplingParams

MSGS = [{"role": "system", "content": "You answer briefly."},
        {"role": "user", "content": "What is the capital of France?"}]  # fmt: skip
COUNT = "1, 2, 3, 4,"


def greedy(n: int, **kw) -> SamplingParams:
    return SamplingParams(temperature=0.0, max_tokens=n, **kw)


def test_chat_matches_llm_chat_and_usage(server):
    ref = server.reference(lambda: server.llm.chat(MSGS, greedy(8)))[0].outputs[0]
    r = server.client().chat.completions.create(model="smollm2", messages=MSGS, max_tokens=8, temperature=0)
    c = r.choices[0]
    assert c.message.role == "assistant"
    assert c.message.content == ref.text
    assert c.finish_reason == ref.finish_reason
    prompt_ids = server.llm.tokenize(server.llm.render_chat(MSGS), add_special=False)
    assert r.usage.prompt_tokens == len(prompt_ids)
    assert r.usage.completion_tokens == len(ref.token_ids)
    assert r.usage.total_tokens == len(prompt_ids) + len(ref.token_ids)
    assert r.model == "smollm2" and r.object == "chat.completion"


def test_chat_stream_matches_and_usage_chunk(server):
    ref = server.reference(lambda: server.llm.chat(MSGS, greedy(8)))[0].outputs[0]
    stream = server.client().chat.completions.create(
        messages=MSGS, max_tokens=8, temperature=0, stream=True, stream_options={"include_usage": True},
        model="smollm2")  # fmt: skip
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    assert text == ref.text
    finals = [ch.choices[0].finish_reason for ch in chunks if ch.choices and ch.choices[0].finish_reason]
    assert finals == [ref.finish_reason]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == len(ref.token_ids)
    assert chunks[-1].usage.prompt_tokens == len(
        server.llm.tokenize(server.llm.render_chat(MSGS), add_special=False)
    )


def test_sse_framing_raw(server):
    """Exactly OpenAI's framing: `data: {json}` events, the last one `data: [DONE]`."""
    body = {"model": "smollm2", "prompt": COUNT, "max_tokens": 3, "temperature": 0, "stream": True}
    with httpx.stream("POST", f"{server.base_url}/v1/completions", json=body, timeout=300) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        raw = r.read().decode()
    events = [e for e in raw.split("\n\n") if e]
    assert all(e.startswith("data: ") for e in events)
    assert events[-1] == "data: [DONE]"
    objs = [json.loads(e[6:]) for e in events[:-1]]
    assert all(o["object"] == "text_completion" for o in objs)
    assert objs[-1]["choices"][0]["finish_reason"] == "length"


def test_completion_n2_seeded_matches_generate(server):
    sp = SamplingParams(temperature=0.9, top_p=0.95, seed=1234, max_tokens=6, n=2)
    ref = server.reference(lambda: server.llm.generate("Once upon a time", sp))[0]
    r = server.client().completions.create(model="smollm2", prompt="Once upon a time", max_tokens=6, n=2,
                                           temperature=0.9, top_p=0.95, seed=1234)  # fmt: skip
    got = sorted((c.index, c.text) for c in r.choices)
    assert got == [(o.index, o.text) for o in ref.outputs]
    assert r.usage.prompt_tokens == len(server.llm.tokenize("Once upon a time"))
    assert r.usage.completion_tokens == sum(len(o.token_ids) for o in ref.outputs)


def test_stop_string_cut_and_never_streamed(server):
    full = server.reference(lambda: server.llm.generate(COUNT, greedy(8)))[0].outputs[0].text
    stop = " 7"
    assert stop in full, f"the model no longer counts: {full!r}"
    want = full[: full.index(stop)]
    c = server.client()
    r = c.completions.create(model="smollm2", prompt=COUNT, max_tokens=8, temperature=0, stop=[stop, "zz"])
    assert r.choices[0].text == want and r.choices[0].finish_reason == "stop"
    streamed = c.completions.create(model="smollm2", prompt=COUNT, max_tokens=8, temperature=0, stop=stop,
                                    stream=True)  # fmt: skip
    assert "".join(ch.choices[0].text for ch in streamed if ch.choices) == want


def test_chat_logprobs_match_engine(server):
    ref = server.reference(lambda: server.llm.chat(MSGS, greedy(5, logprobs=3)))[0].outputs[0]
    r = server.client().chat.completions.create(model="smollm2", messages=MSGS, max_tokens=5, temperature=0,
                                                logprobs=True, top_logprobs=3)  # fmt: skip
    content = r.choices[0].logprobs.content
    assert len(content) == len(ref.token_ids)
    tok = server.llm.tokenizer
    for item, t, lp in zip(content, ref.token_ids, ref.logprobs):
        assert bytes(item.bytes) == tok.token_bytes(t)
        assert item.logprob == pytest.approx(lp[t], abs=1e-6)
        assert len(item.top_logprobs) == 3
        assert item.top_logprobs[0].logprob == pytest.approx(item.logprob, abs=1e-6)  # greedy = argmax
        assert [x.logprob for x in item.top_logprobs] == sorted(
            (x.logprob for x in item.top_logprobs), reverse=True
        )
    if r.choices[0].finish_reason == "length":
        assert b"".join(bytes(i.bytes) for i in content).decode() == r.choices[0].message.content


def test_completion_logprobs_shape(server):
    r = server.client().completions.create(
        model="smollm2", prompt=COUNT, max_tokens=4, temperature=0, logprobs=2
    )
    lp = r.choices[0].logprobs
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == r.usage.completion_tokens == 4
    assert "".join(lp.tokens) == r.choices[0].text
    assert lp.text_offset == [sum(len(t) for t in lp.tokens[:i]) for i in range(4)]
    for v, top in zip(lp.token_logprobs, lp.top_logprobs):
        assert len(top) <= 2 and max(top.values()) == pytest.approx(v, abs=1e-6)


SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string", "enum": ["Paris", "Rome", "Berlin"]},
                   "population_millions": {"type": "integer", "minimum": 0, "maximum": 99}},
    "required": ["city", "population_millions"],
    "additionalProperties": False,
}  # fmt: skip


def test_json_schema_output_validates(server):
    jsonschema = pytest.importorskip("jsonschema")
    pytest.importorskip("xgrammar", reason="structured output needs xgrammar (pip install xgrammar)")
    r = server.client().chat.completions.create(
        model="smollm2", max_tokens=40, temperature=0,
        messages=[{"role": "user", "content": "Which city is the capital of France? Answer in JSON."}],
        response_format={"type": "json_schema",
                         "json_schema": {"name": "city", "schema": SCHEMA, "strict": True}},
    )  # fmt: skip
    c = r.choices[0]
    assert c.finish_reason == "stop", c.message.content
    jsonschema.validate(json.loads(c.message.content), SCHEMA)


def test_json_object_output_parses(server):
    pytest.importorskip("xgrammar", reason="structured output needs xgrammar (pip install xgrammar)")
    r = server.client().completions.create(
        model="smollm2",
        prompt="A JSON object describing a cat:",
        max_tokens=48,
        temperature=0,
        extra_body={"response_format": {"type": "json_object"}},
    )
    c = r.choices[0]
    if c.finish_reason == "stop":
        assert isinstance(json.loads(c.text), dict)
    else:  # cut by max_tokens: still a prefix of an object
        assert c.text.startswith("{")


def test_models_tokenize_detokenize_health(server):
    c = server.client()
    assert [m.id for m in c.models.list().data] == ["smollm2"]
    assert httpx.get(f"{server.base_url}/health").status_code == 200
    text = "Hello, wörld! <|im_start|>"
    r = httpx.post(f"{server.base_url}/tokenize", json={"prompt": text}).json()
    assert r["tokens"] == server.llm.tokenize(text) and r["count"] == len(r["tokens"])
    r2 = httpx.post(f"{server.base_url}/tokenize", json={"messages": MSGS}).json()
    assert r2["tokens"] == server.llm.tokenize(server.llm.render_chat(MSGS), add_special=False)
    d = httpx.post(f"{server.base_url}/detokenize", json={"tokens": r["tokens"]}).json()
    assert d["prompt"] == server.llm.detokenize(r["tokens"])


def test_stream_never_splits_utf8(server):
    """Deltas are whole characters: no replacement char, and they join to the non-streamed text."""
    prompt = "Écris « bonjour » en japonais, chinois et avec des emojis 😀:"
    c = server.client()
    r = c.completions.create(
        model="smollm2", prompt=prompt, max_tokens=24, temperature=0, extra_body={"ignore_eos": True}
    )
    stream = c.completions.create(model="smollm2", prompt=prompt, max_tokens=24, temperature=0, stream=True,
                                  extra_body={"ignore_eos": True})  # fmt: skip
    deltas = [ch.choices[0].text for ch in stream if ch.choices]
    assert "".join(deltas) == r.choices[0].text
    assert not any("\ufffd" in d for d in deltas)
