"""Byte-level BPE pre-tokenizers, chosen by the GGUF key `tokenizer.ggml.pre`.

A byte-level BPE vocabulary (`tokenizer.ggml.model == "gpt2"`) was trained on text first cut into
words by a regex; merges never cross those cuts, so encoding must cut the same way. The GGUF stores
only the regex's *name*; the patterns below are the ones llama.cpp runs for each name
(`llm_tokenizer_bpe` in llama-vocab.cpp), written for HF `tokenizers`' Oniguruma engine. Where a name
lists several regexes they are applied in turn: each one splits every piece left by the previous,
keeping both the matches and the text between them ("isolated").

Per name, llama.cpp also fixes two flags that the file may not carry:
    ignore_merges: a word that is itself a vocabulary entry becomes that one token, merges unused
                   (Llama 3 style vocabularies);
    add_bos:       whether BOS is prepended when `tokenizer.ggml.add_bos_token` is absent.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

# GPT-2's original split: contractions, letter runs, digit runs, other runs, trailing whitespace.
GPT2 = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
# NOTE: llama.cpp's GPT-2 pattern ends at `\s+(?!\S)`; its hand-written matcher for this exact
# pattern (unicode_regex_split_custom_gpt2) also takes a final whitespace run, which `\s+` spells.

_CONTRACTIONS = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])"
# Llama 3 / tiktoken cl100k: digits in groups of up to three, punctuation keeps trailing newlines.
LLAMA3 = (
    _CONTRACTIONS + r"|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
# Qwen 2: the Llama 3 pattern with single digits.
QWEN2 = _CONTRACTIONS + r"|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
# GPT-4o / Llama 4 (the tokenizer.json original, which Oniguruma runs directly).
GPT4O = (
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?"
    r"|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?"
    r"|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
# Mistral Tekken (tokenizer.json original).
TEKKEN = (
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+"
    r"|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*"
    r"|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)


@dataclass(frozen=True)
class PreTokenizerSpec:
    name: str  # the llama.cpp family this name belongs to
    regexes: tuple[str, ...]  # applied in order, each splitting the pieces of the previous
    ignore_merges: bool = False
    add_bos: bool = False  # default when the file has no tokenizer.ggml.add_bos_token


_DEFAULT = PreTokenizerSpec("default", (r"[\p{P}\$\+<=>\^~\|]+", GPT2, r"\p{N}+", r"[0-9][0-9][0-9]"))
_FAMILIES = {
    "default": _DEFAULT,
    "gpt-2": PreTokenizerSpec("gpt-2", (GPT2,)),
    "smollm": PreTokenizerSpec("smollm", (r"\p{N}", GPT2)),  # GPT-2 split, every digit alone
    "llama3": PreTokenizerSpec("llama3", (LLAMA3,), ignore_merges=True, add_bos=True),
    "dbrx": PreTokenizerSpec("dbrx", (LLAMA3,)),
    "qwen2": PreTokenizerSpec("qwen2", (QWEN2,)),
    "falcon": PreTokenizerSpec("falcon", (r"[\p{P}\$\+<=>\^~\|`]+", GPT2, r"[0-9][0-9][0-9]")),
    "chatglm4": PreTokenizerSpec("chatglm4", (LLAMA3,)),
    "gpt-4o": PreTokenizerSpec("gpt-4o", (GPT4O,)),
    "tekken": PreTokenizerSpec("tekken", (TEKKEN,), ignore_merges=True, add_bos=True),
}
# `tokenizer.ggml.pre` value -> family, as llama.cpp's llama_vocab::impl::load groups them.
_ALIASES = {
    "default": "default",
    **dict.fromkeys(("gpt-2", "phi-2", "jina-es", "jina-de", "gigachat", "jina-v2-es", "jina-v2-de",
                     "mpt", "olmo", "jais", "exaone4", "a.x-4.0", "mellum", "trillion"), "gpt-2"),
    **dict.fromkeys(("smollm", "starcoder", "refact", "command-r", "codeshell", "exaone", "minerva-7b"),
                    "smollm"),
    **dict.fromkeys(("llama3", "llama-v3", "llama-bpe", "falcon3", "falcon-h1", "pixtral", "midm-2.0",
                     "lfm2"), "llama3"),
    **dict.fromkeys(("dbrx", "smaug-bpe"), "dbrx"),
    **dict.fromkeys(("qwen2", "deepseek-r1-qwen", "kormo", "megrez", "stablelm2", "hunyuan"), "qwen2"),
    "falcon": "falcon",
    **dict.fromkeys(("glm4", "chatglm-bpe"), "chatglm4"),
    **dict.fromkeys(("gpt-4o", "llama4", "minimax-m2"), "gpt-4o"),
    "tekken": "tekken",
}  # fmt: skip


def pre_tokenizer_spec(name: str | None) -> PreTokenizerSpec:
    """The split for `tokenizer.ggml.pre == name`; an unknown name warns and uses llama.cpp's default."""
    family = _ALIASES.get(name or "default")
    if family is None:
        warnings.warn(
            f"GGUF tokenizer.ggml.pre = {name!r} is not a pre-tokenizer rocmforge knows "
            f"(known: {', '.join(sorted(_ALIASES))}); using llama.cpp's 'default' split, which may "
            "tokenize this model's text differently from its training.",
            stacklevel=2,
        )
        family = "default"
    return _FAMILIES[family]


def byte_alphabet() -> dict[int, str]:
    """GPT-2's byte -> character map: printable Latin-1 bytes stand for themselves, the other 68 bytes
    take the characters U+0100, U+0101, ... in byte order, so every byte string is printable text."""
    keep = {*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)}
    table, extra = {}, 0
    for b in range(256):
        if b in keep:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return table
