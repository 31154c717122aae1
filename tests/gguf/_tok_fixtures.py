"""Shared, load-once helpers for the tokenizer and chat-template tests.

The reference is HF transformers reading the same GGUF (`AutoTokenizer.from_pretrained(dir,
gguf_file=name)`'s tokenizer), which agrees with llama.cpp on these models. Loading it takes seconds
to tens of seconds per model, so each model's HF tokenizer, metadata and our tokenizer are cached
for the whole pytest process: both test files share them.
"""

from __future__ import annotations

import functools
import os
from typing import Any

import pytest

MODELS = ("smollm2", "gemma3", "qwen2.5-coder")


@functools.cache
def model_path(name: str) -> str:
    try:
        from rocmforge.hub import resolve_model
    except ImportError as e:  # pragma: no cover - the hub is part of the package
        pytest.skip(f"rocmforge.hub is not importable ({e}); cannot locate the real GGUF models")
    return str(resolve_model(name))


def _metadata_gguf_py(path: str) -> dict[str, Any]:
    """Every KV pair via gguf-py (independent of our reader): strings decoded, arrays as lists."""
    import gguf

    reader = gguf.GGUFReader(path)
    out: dict[str, Any] = {}
    for key, field in reader.fields.items():
        if key.startswith("GGUF."):
            continue
        kind = field.types[0]
        if kind == gguf.GGUFValueType.STRING:
            out[key] = bytes(field.parts[field.data[0]]).decode()
        elif kind == gguf.GGUFValueType.ARRAY:
            if field.types[1] == gguf.GGUFValueType.STRING:
                out[key] = [bytes(field.parts[i]).decode() for i in field.data]
            else:
                out[key] = [field.parts[i][0].item() for i in field.data]
        else:
            out[key] = field.parts[field.data[0]][0].item()
    return out


@functools.cache
def metadata(name: str) -> dict[str, Any]:
    """GGUFFile(path).metadata when the reader is importable, else gguf-py's view of the same pairs."""
    path = model_path(name)
    try:
        from rocmforge.gguf.reader import GGUFFile
    except ImportError:
        return _metadata_gguf_py(path)
    return GGUFFile(path).metadata


@functools.cache
def ours(name: str):
    from rocmforge.gguf.tokenizer import GGUFTokenizer

    return GGUFTokenizer.from_metadata(metadata(name))


# The class AutoTokenizer.from_pretrained(dir, gguf_file=name) resolves to for each file (transformers
# 5.x). NOTE: calling it directly gives the same tokenizer; AutoTokenizer would first build a model
# config with gguf-py's reader, a pure-Python pass over the whole file that triples the load time.
HF_CLASS = {"smollm2": "TokenizersBackend", "gemma3": "GemmaTokenizer", "qwen2.5-coder": "Qwen2Tokenizer"}


@functools.cache
def hf(name: str):
    transformers = pytest.importorskip("transformers")
    path = model_path(name)
    cls = getattr(transformers, HF_CLASS[name], None) or transformers.AutoTokenizer
    return cls.from_pretrained(os.path.dirname(path), gguf_file=os.path.basename(path))


# Edge cases for id-for-id comparison with the reference (the brief's list, and a few more).
EDGE_CASES = [
    "", " ", "  ", "   ", "\t", "\n", "\n\n", "\n\n\n", "\r\n", "a\r\nb", " \t \n  x  \n\t",
    "Hello world", "Hello, world!", "hello   world", "  leading", "trailing  ", " both ",
    "1234567890", "3.14159", "1,000,000", "x = 12345 + 678", "2024-01-31T12:00:00Z",
    "I'm", "don't", "we'll", "THEY'RE", "You've", "she'd", "it's O'Neil's",
    "é", "ñ", "naïve café", "Straße", "Привет, мир", "Γειά σου Κόσμε", "中文", "日本語のテキスト", "한국어",
    "مرحبا بالعالم", "नमस्ते", "😀", "👍🏽", "👨‍👩‍👧‍👦", "🇫🇷🇯🇵", "a😀b", "🏳️‍🌈 flag",
    "def f(x):\n    if x:\n        return x * 2\n    return None\n",
    '{"key": [1, 2, {"nested": true}], "s": "v"}',
    "int main() {\n\tprintf(\"hi\\n\");\n\treturn 0;\n}",
    "https://example.com/path?q=1&r=two#frag", "user@example.org",
    "MiXeD CaSe WoRdS", "Supercalifragilisticexpialidocious", "antidisestablishmentarianism",
    "!!!???", "...", "---", "—–-", "<<>>", "$$$ %%% ^^^", "a" * 50, "ab " * 20,
    "<|im_start|>user\nhi<|im_end|>", "<|im_start|>", "<|im_end|>\n<|im_start|>assistant\n",
    "<|endoftext|>", "<start_of_turn>user\nhi<end_of_turn>", "<start_of_turn>", "<bos>", "<bos>hello",
    "<eos>", "<pad>", "<tool_call>", "<table><tr><td>x</td></tr></table>", "<b>bold</b>",
    "\u00a0nbsp", "zero\u200bwidth", "combining e\u0301", "\ufeffbom",
]  # fmt: skip
