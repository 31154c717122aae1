"""GGUFTokenizer vs HF transformers reading the same GGUF, on the three real models.

Reference: `AutoTokenizer.from_pretrained(dir, gguf_file=name)` (see _tok_fixtures.py), compared id
for id on ~95 edge-case strings, with special-token parsing on and off, with and without BOS/EOS,
and for decoding. The EOG sets are checked against llama.cpp's rule, stated by token name.
"""

from __future__ import annotations

import random

import pytest
from _tok_fixtures import EDGE_CASES, MODELS, hf, metadata, ours

from rocmforge.gguf.errors import GGUFError
from rocmforge.gguf.tokenizer import GGUFTokenizer

pytestmark = pytest.mark.slow

# What llama.cpp's llama_vocab::impl::load puts in special_eog_ids for each file (eos id, the fixed name
# list, the FIM pad/repo/sep tokens), written as token texts; it logs these as "EOG token = ...".
LLAMA_CPP_EOG = {
    "smollm2": {"<|endoftext|>", "<|im_end|>", "<reponame>"},
    "gemma3": {"<eos>", "<end_of_turn>"},
    "qwen2.5-coder": {"<|endoftext|>", "<|im_end|>", "<|fim_pad|>", "<|repo_name|>", "<|file_sep|>"},
}


def _mismatches(pairs):
    bad = [(s, a, b) for s, a, b in pairs if a != b]
    return "\n".join(f"{s!r}:\n  ours {a}\n  ref  {b}" for s, a, b in bad[:10]) + f"\n({len(bad)} differ)"


@pytest.mark.parametrize("parse_special", [True, False], ids=["parse_special", "plain_text"])
@pytest.mark.parametrize("name", MODELS)
def test_encode_matches_hf(name, parse_special):
    tok, ref = ours(name), hf(name)
    pairs = [(s, tok.encode(s, add_special=False, parse_special=parse_special),
              ref.encode(s, add_special_tokens=False, split_special_tokens=not parse_special))
             for s in EDGE_CASES]  # fmt: skip
    assert all(a == b for _, a, b in pairs), _mismatches(pairs)


@pytest.mark.parametrize("name", MODELS)
def test_add_special_matches_hf_without_double_bos(name):
    tok, ref = ours(name), hf(name)
    assert (tok.add_bos, tok.add_eos) == (bool(ref.add_bos_token), bool(ref.add_eos_token))
    assert (tok.bos_id, tok.eos_id) == (ref.bos_token_id, ref.eos_token_id)
    pairs = []
    for s in EDGE_CASES:
        want = ref.encode(s, add_special_tokens=True)
        if tok.add_bos and want[:2] == [tok.bos_id, tok.bos_id]:
            want = want[1:]  # HF prepends BOS even when the text starts with "<bos>"; we do not
        pairs.append((s, tok.encode(s), want))
    assert all(a == b for _, a, b in pairs), _mismatches(pairs)


def test_no_double_bos():
    tok = ours("gemma3")
    bos = tok.bos_id
    assert tok.add_bos and tok.encode("hello")[0] == bos
    assert tok.encode("<bos>hello")[:2] == [bos, tok.encode("hello", add_special=False)[0]]
    as_text = tok.encode("<bos>hello", parse_special=False)  # literal text: BOS added, the text is not BOS
    assert as_text[0] == bos and bos not in as_text[1:]


@pytest.mark.parametrize("name", MODELS)
def test_decode_matches_hf(name):
    tok, ref = ours(name), hf(name)
    pairs = []
    for s in EDGE_CASES:
        ids = ref.encode(s, add_special_tokens=True)
        for skip in (False, True):
            want = ref.decode(ids, skip_special_tokens=skip, clean_up_tokenization_spaces=False)
            pairs.append((f"{s} skip={skip}", tok.decode(ids, skip_special=skip), want))
    assert all(a == b for _, a, b in pairs), _mismatches(pairs)


@pytest.mark.parametrize("name", MODELS)
def test_round_trip(name):
    tok = ours(name)
    pairs = [(s, tok.decode(tok.encode(s, add_special=False)), s) for s in EDGE_CASES]
    pairs += [(s, tok.decode(tok.encode(s), skip_special=True), s) for s in EDGE_CASES if "<" not in s]
    assert all(a == b for _, a, b in pairs), _mismatches(pairs)


def _stream(tok, ids, **kw):
    dec = tok.stream_decoder(**kw)
    parts = [dec.push(i) for i in ids]
    return parts, dec.flush()


@pytest.mark.parametrize("name", MODELS)
def test_stream_decode_equals_whole_decode(name):
    tok = ours(name)
    for s in EDGE_CASES:
        ids = tok.encode(s)
        for skip in (False, True):
            parts, tail = _stream(tok, ids, skip_special=skip)
            assert "".join(parts) + tail == tok.decode(ids, skip_special=skip), s
            if "\ufffd" not in s:  # a character split over tokens is held back, never emitted broken
                assert not any("\ufffd" in p for p in parts) and tail == "", (s, parts)
    # Random ids, including lone byte-fallback / partial-UTF-8 tokens: still equal to the whole decode.
    rng = random.Random(0)
    multibyte = tok.encode("😀👨‍👩‍👧‍👦中文日本語🇫🇷 é ñ Привет", add_special=False)
    for _ in range(200):
        ids = [rng.choice(multibyte) if rng.random() < 0.6 else rng.randrange(tok.vocab_size)
               for _ in range(12)]  # fmt: skip
        parts, tail = _stream(tok, ids)
        assert "".join(parts) + tail == tok.decode(ids), ids


def test_stream_holds_back_split_characters():
    tok = ours("gemma3")  # SentencePiece with <0xXX> byte fallback
    byte = [tok.piece_to_id(f"<0x{b:02X}>") for b in "€".encode()]  # 3 bytes, one token each
    dec = tok.stream_decoder()
    assert [dec.push(i) for i in byte] == ["", "", "€"] and dec.flush() == ""
    dec.push(byte[0])
    assert dec.flush() == "\ufffd"  # an unfinished character at the end comes out as U+FFFD
    assert tok.decode(tok.encode(" a b", add_special=False)) == " a b"  # "▁" -> " " on every token


@pytest.mark.parametrize("name", MODELS)
def test_special_tokens_parse_on_off(name):
    tok, ref = ours(name), hf(name)
    marker = {"gemma3": "<start_of_turn>"}.get(name, "<|im_start|>")
    tid = ref.convert_tokens_to_ids(marker)
    on = tok.encode(f"x{marker}y", add_special=False)
    off = tok.encode(f"x{marker}y", add_special=False, parse_special=False)
    assert tid in on and tid not in off and len(off) > len(on)
    assert tok.decode(off) == tok.decode(on) == f"x{marker}y"
    assert tok.is_special(tid) and marker not in tok.decode(on, skip_special=True)


@pytest.mark.parametrize("name", MODELS)
def test_eog_and_vocab(name):
    tok, ref = ours(name), hf(name)
    assert tok.eog_ids == {ref.convert_tokens_to_ids(t) for t in LLAMA_CPP_EOG[name]}
    assert tok.vocab_size == len(metadata(name)["tokenizer.ggml.tokens"]) == len(ref)
    rng = random.Random(1)
    for i in rng.sample(range(tok.vocab_size), 300):
        piece = tok.id_to_piece(i)
        assert tok.piece_to_id(piece) == i
        if piece.strip():  # HF respells Gemma's all-space tokens as "▁▁..."
            assert piece == ref.convert_ids_to_tokens(i)
    assert tok.piece_to_id("definitely not a token \x00") is None


@pytest.mark.parametrize("pre", ["llama-bpe", "gpt-2"])
def test_other_pre_tokenizers_match_hf_converter(pre):
    """Named splits we have no real file for: SmolLM2's vocabulary under another `tokenizer.ggml.pre`,
    against transformers' own GGUF converter given the same fields."""
    mapping = pytest.importorskip("transformers.integrations.gguf.gguf_tokenizer_mapping")
    md = dict(metadata("smollm2"), **{"tokenizer.ggml.pre": pre})
    fields = {"tokenizer_type": "gpt2", "pre_tokenizer_type": pre, "tokens": md["tokenizer.ggml.tokens"],
              "merges": md["tokenizer.ggml.merges"], "token_type": md["tokenizer.ggml.token_type"]}
    ref, _ = mapping.convert_gguf_tokenizer("llama", fields)
    tok = GGUFTokenizer.from_metadata(md)
    pairs = [(s, tok.encode(s, add_special=False), ref.encode(s, add_special_tokens=False).ids)
             for s in EDGE_CASES]  # fmt: skip
    assert all(a == b for _, a, b in pairs), _mismatches(pairs)


def test_bad_metadata_errors():
    md = metadata("smollm2")
    with pytest.raises(GGUFError, match="tokenizer.ggml.model = 'bert'"):
        GGUFTokenizer.from_metadata(dict(md, **{"tokenizer.ggml.model": "bert"}))
    with pytest.raises(GGUFError, match="merges"):
        GGUFTokenizer.from_metadata({k: v for k, v in md.items() if k != "tokenizer.ggml.merges"})
    with pytest.raises(GGUFError, match="no tokenizer.ggml.tokens"):
        GGUFTokenizer.from_metadata({"tokenizer.ggml.model": "gpt2"})
    with pytest.warns(UserWarning, match="not a pre-tokenizer rocmforge knows"):
        GGUFTokenizer.from_metadata(dict(md, **{"tokenizer.ggml.pre": "no-such-pre"}))
    with pytest.raises(ValueError, match="outside the vocabulary"):
        ours("smollm2").decode([10**9])


def test_sentencepiece_rules_on_a_tiny_vocabulary():
    """llama.cpp's SPM rules worked by hand: spaces -> "▁", one "▁" before every text fragment when
    add_space_prefix, merge the adjacent pair whose piece scores highest (leftmost on ties), bytes with
    no piece -> <0xXX>, and detokenizing drops the prefix space of the first token."""
    pieces = [("<unk>", 2), ("<s>", 3), ("</s>", 3), ("▁", 1), ("h", 1), ("i", 1), ("▁h", 1), ("hi", 1),
              ("▁hi", 1), ("<0x21>", 6)]  # fmt: skip
    md = {"tokenizer.ggml.model": "llama", "tokenizer.ggml.tokens": [p for p, _ in pieces],
          "tokenizer.ggml.token_type": [t for _, t in pieces], "tokenizer.ggml.add_space_prefix": True,
          "tokenizer.ggml.scores": [0.0, 0.0, 0.0, -1.0, -2.0, -3.0, -4.0, -5.0, -6.0, 0.0],
          "tokenizer.ggml.bos_token_id": 1, "tokenizer.ggml.eos_token_id": 2,
          "tokenizer.ggml.unknown_token_id": 0}
    tok = GGUFTokenizer.from_metadata(md)
    # "▁hi▁hi": "▁h" (score -4) merges twice before "hi" (-5) could, then "▁h"+"i" -> "▁hi" twice.
    assert tok.encode("hi hi") == [1, 8, 8] and tok.add_bos  # SentencePiece default: BOS on
    assert tok.encode("hi!", add_special=False) == [8, 9]  # "!" has no piece: its byte token
    assert tok.encode("h", add_special=False) == [6]
    assert tok.encode("hi</s>hi", add_special=False) == [8, 2, 8]  # each fragment gets its own "▁"
    assert tok.encode("<s>hi") == [1, 8]  # no second BOS
    assert tok.decode([8, 8]) == "hi hi" and tok.decode([1, 8, 8]) == "<s> hi hi"
    assert tok.decode([1, 8, 8], skip_special=True) == " hi hi"  # llama.cpp keeps it when BOS leads
    assert tok.eog_ids == {2}
