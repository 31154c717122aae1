"""A generated set of bad requests: each gets a 4xx in OpenAI's error envelope, never a 5xx.

Cases are built from the API's fields: every field given every wrong JSON type, out-of-range values,
empty or unknown messages and roles, prompts longer than the context, bad JSON, invalid UTF-8,
wrong content types, missing fields, unknown models and routes. The server must still answer a
good request afterwards. The API key (401) and loading (503) paths run on a model-less app.
"""

from __future__ import annotations

import json

import httpx
import pytest

MAX_LEN = 384  # the test server's context (conftest.MAX_LEN; checked below)

CHAT = {"model": "smollm2", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
COMP = {"model": "smollm2", "prompt": "hi", "max_tokens": 2}

WRONG = {  # per JSON type of a field: values of another type (strict: no coercion)
    "int": ["5", 1.5, True, [1], {"v": 1}],
    "float": ["0.5", True, [0.5], {"v": 1}],
    "bool": ["true", 1, [True], {"v": 1}],
    "str": [1, True, ["smollm2"], {"id": 1}],
}
FIELDS = {  # field: JSON type, for both routes (+ route-specific below)
    "max_tokens": "int",
    "temperature": "float",
    "top_p": "float",
    "top_k": "int",
    "min_p": "float",
    "presence_penalty": "float",
    "frequency_penalty": "float",
    "repetition_penalty": "float",
    "seed": "int",
    "n": "int",
    "stream": "bool",
    "ignore_eos": "bool",
    "min_tokens": "int",
    "model": "str",
}
CHAT_FIELDS = {"max_completion_tokens": "int", "logprobs": "bool", "top_logprobs": "int"}
COMP_FIELDS = {"logprobs": "int", "echo": "bool"}
BAD_VALUES = {  # right type, wrong value
    "max_tokens": [0, -1, 10**9, 10**30],
    "temperature": [-1.0, 2.5, 1e308],
    "top_p": [0.0, -0.1, 1.5],
    "top_k": [-2, -100],
    "min_p": [-0.1, 1.5],
    "presence_penalty": [-3.0, 3.0],
    "frequency_penalty": [-2.5, 9.0],
    "repetition_penalty": [0.0, -1.0],
    "n": [0, -1, 17, 10**6],
    "min_tokens": [-1, 5],
    "stop": [[""], ["a"] * 17, [1, 2], ["a", 1], 5, {"s": "x"}, True],
    "stop_token_ids": [[-1], [10**9], ["1"], "1", [1.5]],
    "stream_options": ["yes", 1, {"include_usage": "yes"}, [True]],
    "response_format": [
        "json",
        {"type": "xml"},
        {"type": 1},
        {"type": "json_schema"},
        {},
        {"type": "json_schema", "json_schema": {"name": "x", "schema": "nope"}},
        {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "no-such-type"}}},
        {"type": "json_schema", "json_schema": {"name": "x", "schema": {"$ref": "#/missing"}}},
    ],
}
ROLES = ["robot", "", "USER", "System", "function", "tool", 5, None]
CONTENTS = [
    5,
    {"text": "hi"},
    [{"type": "image_url", "image_url": {"url": "http://127.0.0.1/x.png"}}],
    [{"type": "text"}],
    [{"text": "hi"}],
    [{"type": "text", "text": 5}],
    None,
    ["hi"],
    True,
]
MESSAGES = [
    [],
    "hi",
    {"role": "user", "content": "hi"},
    [1],
    ["hi"],
    None,
    [{"content": "hi"}],
    [{"role": "user"}],
    [{"role": "system"}],
    [[{"role": "user", "content": "hi"}]],
]
PROMPTS = [
    None,
    5,
    [],
    [[]],
    [-1],
    [10**9],
    [[1, "a"]],
    {"text": "hi"},
    True,
    [1.5],
    ["a"] * 65,
    [[-5]],
    [None],
]
LONG = "hello " * (MAX_LEN + 50)
RAW_BODIES = [
    b"",
    b"{",
    b'{"model":',
    b"[1,2]",
    b"null",
    b"42",
    b'"str"',
    b"{'a': 1}",
    b'{"messages": [}',
    b'{"prompt": "hi",}',
    b'{"prompt": "hi"} x',
    b'{"prompt": "hi", "temperature": NaN}',
    b'{"prompt": "hi", "temperature": Infinity}',
    b"\xff\xfe",
    b'{"prompt": "\xc3\x28"}',
    b'{"prompt": "caf\xe9"}',
    b'{"prompt": "\\ud800"}',
    b'{"prompt": "\\udc00x"}',
    b'{"messages": [{"role": "user", "content": "\\ud83d"}]}',
    b"\x00\x00\x00",
]
CTYPES = [
    "text/plain",
    "application/x-www-form-urlencoded",
    "multipart/form-data; boundary=x",
    "application/xml",
    "",
]


def _cases() -> list[tuple[str, str, bytes, dict]]:
    """(method, path, body, headers) of every bad request."""
    js = {"content-type": "application/json"}
    cases = []

    def add(path, body, method="POST", headers=js):
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        cases.append((method, path, raw, headers))

    for path, base, extra in (
        ("/v1/chat/completions", CHAT, CHAT_FIELDS),
        ("/v1/completions", COMP, COMP_FIELDS),
    ):
        for field, kind in {**FIELDS, **extra}.items():
            for v in WRONG[kind]:
                add(path, {**base, field: v})
        for field, values in BAD_VALUES.items():
            for v in values:
                add(path, {**base, field: v})
        for model in ["gpt-4", "", "SMOLLM2", "smollm2 "]:
            add(path, {**base, "model": model})
        for body in (
            b"",
            b"[]",
            b"{}",
            json.dumps({"model": "smollm2", "max_tokens": 2}).encode(),  # no messages / prompt
        ):
            for raw in RAW_BODIES[:6] if body == b"" else [body]:
                add(path, raw)
        for raw in RAW_BODIES:
            add(path, raw)
        for ct in CTYPES:
            add(path, json.dumps(base).encode(), headers={"content-type": ct} if ct else {})
        add(path, {**base, "stream": True, "temperature": -1})
        add(path, {**base, "stream": True, "max_tokens": MAX_LEN})
        add(path, json.dumps(base).encode(), method="GET")
        add(path, json.dumps(base).encode(), method="PUT")
    add("/v1/chat/completions", {**CHAT, "logprobs": False, "top_logprobs": 2})
    add("/v1/chat/completions", {**CHAT, "logprobs": True, "top_logprobs": 21})
    add("/v1/completions", {**COMP, "logprobs": 21})
    for role in ROLES:
        add("/v1/chat/completions", {**CHAT, "messages": [{"role": role, "content": "hi"}]})
    for content in CONTENTS:
        add("/v1/chat/completions", {**CHAT, "messages": [{"role": "user", "content": content}]})
    for msgs in MESSAGES:
        add("/v1/chat/completions", {**CHAT, "messages": msgs})
    for p in PROMPTS:
        add("/v1/completions", {**COMP, "prompt": p})
    add("/v1/completions", {k: v for k, v in COMP.items() if k != "prompt"})
    add("/v1/chat/completions", {k: v for k, v in CHAT.items() if k != "messages"})
    # longer than the context (MAX_LEN tokens), alone or with max_tokens
    add("/v1/chat/completions", {**CHAT, "messages": [{"role": "user", "content": LONG}]})
    add("/v1/chat/completions", {**CHAT, "max_tokens": None, "messages": [{"role": "user", "content": LONG}]})
    add("/v1/completions", {**COMP, "prompt": LONG})
    add("/v1/completions", {**COMP, "prompt": ["hi", LONG]})
    add("/v1/completions", {**COMP, "prompt": [1] * (MAX_LEN + 1)})
    add("/v1/completions", {**COMP, "prompt": [1] * MAX_LEN, "max_tokens": 1})
    add("/v1/completions", {**COMP, "prompt": [1] * 100, "max_tokens": MAX_LEN - 99})
    add("/v1/completions", {**COMP, "prompt": "x" * (9 << 20)})  # over the body limit: 413
    # tokenize / detokenize / routes
    for body in (
        {},
        {"prompt": "a", "messages": [{"role": "user", "content": "a"}]},
        {"prompt": 5},
        {"prompt": "a", "model": "gpt-4"},
        {"messages": [{"role": "x", "content": "a"}]},
    ):
        add("/tokenize", body)
    for body in (
        {},
        {"tokens": [-1]},
        {"tokens": [10**9]},
        {"tokens": ["a"]},
        {"tokens": "abc"},
        {"tokens": None},
    ):
        add("/detokenize", body)
    for method, path in (
        ("GET", "/v1/nothing"),
        ("POST", "/v2/chat/completions"),
        ("POST", "/v1/models"),
        ("DELETE", "/v1/models"),
        ("GET", "/tokenize"),
        ("POST", "/health"),
    ):
        add(path, b"{}", method=method)
    return cases


CASES = _cases()


def test_case_count():
    assert len(CASES) >= 300, len(CASES)


def test_every_bad_request_is_a_4xx_envelope(server):
    assert server.llm.max_model_len == MAX_LEN
    failures = []
    with httpx.Client(base_url=server.base_url, timeout=120) as c:
        for method, path, raw, headers in CASES:
            r = c.request(method, path, content=raw, headers=headers)
            try:
                err = r.json()["error"]
                ok = 400 <= r.status_code < 500 and isinstance(err["message"], str) and err["message"]
                ok = ok and isinstance(err["type"], str) and "param" in err and "code" in err
            except (ValueError, KeyError, TypeError):
                ok = False
            if not ok:
                failures.append((r.status_code, method, path, raw[:120], r.text[:200]))
        assert not failures, (
            f"{len(failures)} of {len(CASES)} bad requests not answered 4xx+envelope:\n"
            + "\n".join(map(str, failures[:20]))
        )
        # still alive, and still right
        r = c.post("/v1/completions", json={"prompt": "1, 2, 3,", "max_tokens": 2, "temperature": 0})
        assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] == 2
    assert server.runtime.engine.num_inflight == 0


def test_unknown_model_is_404(server):
    r = httpx.post(f"{server.base_url}/v1/chat/completions", json={**CHAT, "model": "gpt-4"})
    assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"


def test_api_key_and_loading_without_a_model():
    from fastapi.testclient import TestClient

    from rocmforge.server.app import create_app

    app = create_app(None, model_name="m", api_key="sekret")  # no model and no loader: always "loading"
    with TestClient(app) as c:
        assert c.post("/v1/completions", json=COMP).status_code == 401
        r = c.post("/v1/completions", json=COMP, headers={"Authorization": "Bearer wrong"})
        assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
        r = c.post("/v1/completions", json=COMP, headers={"Authorization": "Bearer sekret"})
        assert r.status_code == 503 and r.json()["error"]["code"] == "model_loading"
        assert c.get("/health").status_code == 503  # open route, but not ready


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/chat/completions"])
def test_routes_without_v1_prefix(server, path):
    r = httpx.post(f"{server.base_url}{path}", json={**CHAT, "temperature": 0}, timeout=120)
    assert r.status_code == 200 and r.json()["object"] == "chat.completion"
