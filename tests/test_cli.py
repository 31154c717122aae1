"""The `rocmforge` command, run as `python -m rocmforge` in a subprocess, on the real SmolLM2 GGUF.

References: HF transformers' tokenizer reading the same GGUF for `tokenize`; the Python API (tested
itself against the model in tests/engine/test_llm_api.py) for `generate --json`; gguf-py's reader
for `inspect`. Errors must be one line on stderr with exit status 2.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TEXT = "<|im_start|>user\nHello wörld, 12345 😀<|im_end|>"


@pytest.fixture(scope="module")
def model_path() -> Path:
    from rocmforge.hub import ModelNotFoundError, resolve_model

    try:
        return resolve_model("smollm2")
    except ModelNotFoundError as e:
        pytest.skip(f"SmolLM2 GGUF not available: {e}")


def run(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-m", "rocmforge", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT, env=env)  # fmt: skip


def test_tokenize_matches_hf(model_path):
    transformers = pytest.importorskip("transformers")
    # NOTE: the tokenizer class AutoTokenizer resolves to for this file, called directly (3x faster).
    cls = getattr(transformers, "TokenizersBackend", None) or transformers.AutoTokenizer
    hf = cls.from_pretrained(str(model_path.parent), gguf_file=model_path.name)
    r = run("tokenize", "-m", str(model_path), TEXT)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == hf(TEXT).input_ids
    r = run("tokenize", "-m", "smollm2", "--raw", TEXT)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == hf(TEXT, add_special_tokens=False, split_special_tokens=True).input_ids


@pytest.mark.parametrize("extra", [(), ("--batch-invariant", "--max-num-seqs", "2")])
def test_generate_json_matches_api(model_path, extra):
    """--batch-invariant: one request alone computes what the default engine does (flags wired)."""
    r = run("generate", "-m", str(model_path), "-p", "The capital of France is", "-n", "5", "--json",
            "--logprobs", "2", "--prompt-logprobs", "1", "--max-model-len", "64", *extra)  # fmt: skip
    assert r.returncode == 0, r.stderr
    obj = json.loads(r.stdout)
    from rocmforge import LLM, SamplingParams

    llm = LLM(str(model_path), device="cpu", max_model_len=64, kv_cache_tokens=256)
    out = llm.generate("The capital of France is", SamplingParams(temperature=0, max_tokens=5, logprobs=2,
                                                                  prompt_logprobs=1))[0]  # fmt: skip
    o = out.outputs[0]
    assert obj["prompt_token_ids"] == out.prompt_token_ids
    assert (obj["token_ids"], obj["text"], obj["finish_reason"]) == (o.token_ids, o.text, "length")
    assert len(obj["logprobs"]) == 5 and obj["prompt_logprobs"][0] is None
    for got, want in zip(obj["logprobs"], o.logprobs):
        assert {int(k): pytest.approx(v, abs=1e-4) for k, v in got.items()} == want
    for got, want in zip(obj["prompt_logprobs"][1:], out.prompt_logprobs[1:]):
        assert {int(k): pytest.approx(v, abs=1e-4) for k, v in got.items()} == want


def test_chat_one_turn_streams_answer(model_path):
    r = run("chat", "-m", str(model_path), "-p", "What is the capital of France?", "-n", "24",
            "--max-model-len", "128")  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "Paris" in r.stdout


def test_inspect_matches_gguf_py(model_path):
    import gguf

    r = run("inspect", str(model_path))
    assert r.returncode == 0, r.stderr
    rows = dict(line.split(None, 1) if " " in line.strip() else (line, "") for line in r.stdout.splitlines()
                if line and not line.startswith(" "))  # fmt: skip
    reader = gguf.GGUFReader(str(model_path))
    field = lambda k: reader.fields[k].parts[reader.fields[k].data[0]]  # noqa: E731
    assert rows["architecture"].strip() == bytes(field("general.architecture")).decode()
    assert rows["layers"].startswith(f"{int(field('llama.block_count')[0])},")
    assert rows["context"].strip() == str(int(field("llama.context_length")[0]))
    counts: dict[str, int] = {}
    for t in reader.tensors:
        counts[t.tensor_type.name] = counts.get(t.tensor_type.name, 0) + 1
    for name, n in counts.items():
        assert f"{name}: {n}" in r.stdout
    assert "chat template   yes" in r.stdout and "<|im_start|>" in r.stdout


@pytest.mark.parametrize(
    "args, needle",
    [
        (["generate", "-m", "no/such/file.gguf", "-p", "hi"], "no GGUF file"),
        (["generate", "-m", "smollm2", "-p", "hi", "--top-p", "2"], "top_p"),
        (["generate", "-m", "smollm2", "-p", "hi", "-n", "0"], "max_tokens"),
        (["pull", "not-a-model"], "known: smollm2"),
        (["inspect", str(ROOT / "pyproject.toml")], "GGUF"),
        (["generate", "--frobnicate", "-p", "x"], "frobnicate"),
        (["generate", "-p", "one two three four five six", "--max-model-len", "4"], "max_model_len"),
    ],
)
def test_errors_are_one_line_exit_2(model_path, args, needle):
    r = run(*args)
    assert r.returncode == 2, (r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], r.stderr
    assert "Traceback" not in r.stderr


def test_serve_answers_openai_requests(model_path):
    """`rocmforge serve` end to end: /health turns 200, a greedy chat answers, a bad field is a 400."""
    import socket
    import time

    httpx = pytest.importorskip("httpx")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen([sys.executable, "-m", "rocmforge", "serve", "-m", str(model_path), "--port",
                             str(port), "--served-model-name", "smol"], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 240
        while True:
            assert proc.poll() is None, proc.stdout.read()
            try:
                if httpx.get(base + "/health", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the server did not become healthy"
            time.sleep(1)
        assert [m["id"] for m in httpx.get(base + "/v1/models").json()["data"]] == ["smol"]
        msg = [{"role": "user", "content": "What is the capital of France?"}]
        r = httpx.post(base + "/v1/chat/completions", timeout=120,
                       json={"model": "smol", "messages": msg, "max_tokens": 16, "temperature": 0})
        assert r.status_code == 200 and "Paris" in r.json()["choices"][0]["message"]["content"], r.text
        bad = httpx.post(base + "/v1/chat/completions", json={"model": "smol", "messages": msg, "n": "two"})
        assert bad.status_code == 400 and bad.json()["error"]["param"] == "n", bad.text
    finally:
        proc.terminate()
        proc.wait(timeout=30)
