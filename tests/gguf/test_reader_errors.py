"""GGUFFile refuses every kind of bad file with a GGUFError whose message names the problem.

Each case writes a valid small file with gguf-py's GGUFWriter (conftest.small_model_spec), then
corrupts its bytes at a field located from the GGUF layout:
    magic(4) version(u32) n_tensors(u64) n_kv(u64) | KV: key string, vtype u32, value | tensor
    info: name string, n_dims u32, ne[n_dims] u64, type u32, offset u64 | pad | data.
Strings are a u64 length + bytes. Checks of the model loader (architecture, required keys) are
not the reader's: only `f.tensor(name)` and `f.architecture` are tested here.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest

from rocmforge.gguf import GGUFError, GGUFFile

U64_MAX = 2**64 - 1


@pytest.fixture
def small(small_gguf) -> bytes:
    return small_gguf.read_bytes()


def expect(path: Path, *words: str) -> str:
    """Open path; it must raise GGUFError naming the file and containing every word."""
    with pytest.raises(GGUFError) as e:
        f = GGUFFile(path)
        for name in f.tensors:  # a file that opens must also fail on load to count
            f.load(name)
    msg = str(e.value)
    assert str(path) in msg, f"message does not name the file: {msg!r}"
    for w in words:
        assert w.lower() in msg.lower(), f"{w!r} not in {msg!r}"
    return msg


def patched(tmp_path: Path, data: bytes, *edits: tuple[int, bytes], name: str = "bad.gguf") -> Path:
    buf = bytearray(data)
    for pos, new in edits:
        buf[pos : pos + len(new)] = new
    p = tmp_path / name
    p.write_bytes(bytes(buf))
    return p


def after(data: bytes, s: str) -> int:
    """Byte position just after the (unique) string s in the file."""
    raw = s.encode()
    i = data.find(raw)
    assert i > 0 and data.find(raw, i + 1) < 0, f"{s!r} must occur exactly once"
    return i + len(raw)


def tensor_fields(data: bytes, name: str) -> dict[str, int]:
    """Positions of one tensor info's fields: n_dims, ne0, ne1, ..., type, offset."""
    pos = after(data, name)
    (n_dims,) = struct.unpack_from("<I", data, pos)
    fields = {"n_dims": pos, **{f"ne{d}": pos + 4 + 8 * d for d in range(n_dims)}}
    fields["type"] = pos + 4 + 8 * n_dims
    fields["offset"] = fields["type"] + 4
    return fields


def u32(v: int) -> bytes:
    return struct.pack("<I", v)


def u64(v: int) -> bytes:
    return struct.pack("<Q", v)


def test_pristine_file_loads(small_gguf):
    f = GGUFFile(small_gguf)
    assert f.architecture == "llama"
    assert f.metadata["tokenizer.ggml.tokens"][2] == "héllo"
    assert f.tensors["blk.0.k4"].shape == (2, 256)
    assert np.array_equal(f.load("pos.ids").numpy(), np.arange(6, dtype=np.float32))


def test_bad_magic(tmp_path, small):
    expect(patched(tmp_path, small, (0, b"GGML")), "not a GGUF file", "magic")


@pytest.mark.parametrize("version, words", [(1, ["version 1", "not supported"]), (4, ["version 4"]),
                                            (0x03000000, ["not supported", "big-endian"])])  # fmt: skip
def test_unsupported_version(tmp_path, small, version, words):
    expect(patched(tmp_path, small, (4, u32(version))), *words)


def test_truncated_everywhere(tmp_path, small, small_gguf):
    f = GGUFFile(small_gguf)
    data_end = max(t.offset + t.nbytes for t in f.tensors.values())
    cuts = sorted({*range(0, 32), *range(32, data_end, 11), f.data_offset, data_end - 1})
    for cut in cuts:
        p = tmp_path / f"cut{cut}.gguf"
        p.write_bytes(small[:cut])
        msg = expect(p)
        assert any(w in msg for w in ("truncated", "cannot fit", "out of bounds", "empty")), (cut, msg)


def test_tensor_data_out_of_bounds(tmp_path, small):
    off = tensor_fields(small, "blk.0.k4")["offset"]
    expect(patched(tmp_path, small, (off, u64(1 << 40))), "blk.0.k4", "out of bounds")
    expect(patched(tmp_path, small, (off, u64(U64_MAX))), "blk.0.k4", "out of bounds")
    expect(patched(tmp_path, small, (off, u64(1))), "blk.0.k4", "misaligned")
    ne1 = tensor_fields(small, "blk.0.k4")["ne1"]
    expect(patched(tmp_path, small, (ne1, u64(1 << 62))), "blk.0.k4", "out of bounds")


@pytest.mark.parametrize("type_id, words", [
    (9999, ["unknown GGML quant type 9999"]), (4, ["unknown", "4"]),  # 4: the removed Q4_2
    (0xFFFFFFFF, ["unknown"]), (16, ["IQ2_XXS", "not supported"]),
])  # fmt: skip
def test_unknown_or_unsupported_quant_type(tmp_path, small, type_id, words):
    t = tensor_fields(small, "blk.0.q8")["type"]
    expect(patched(tmp_path, small, (t, u32(type_id))), "blk.0.q8", *words)


def test_duplicate_key_and_tensor(tmp_path, small):
    k = after(small, "tiny.context_length") - len("tiny.context_length")
    bad = patched(tmp_path, small, (k, b"tiny.rope.freq_base"))
    expect(bad, "duplicate metadata key", "'tiny.rope.freq_base'")
    t = after(small, "blk.0.q4") - len("blk.0.q4")
    expect(patched(tmp_path, small, (t, b"blk.0.q8")), "duplicate tensor name", "blk.0.q8")


def test_bad_shapes(tmp_path, small):
    f = tensor_fields(small, "blk.0.q8")
    for n_dims in (0, 5, 0xFFFFFFFF):
        expect(patched(tmp_path, small, (f["n_dims"], u32(n_dims))), "blk.0.q8", f"{n_dims} dims")
    expect(patched(tmp_path, small, (f["ne0"], u64(0))), "blk.0.q8", "invalid shape")
    expect(patched(tmp_path, small, (f["ne0"], u64(33))), "blk.0.q8", "multiple of 32")


def test_absurd_counts_and_lengths(tmp_path, small):
    for pos, what in ((8, "tensors"), (16, "metadata")):
        for v in (U64_MAX, 1 << 40, 10**6):
            expect(patched(tmp_path, small, (pos, u64(v))), str(v), what, "cannot fit")
    # the key length of the first KV pair, a string value's length, an array's length
    expect(patched(tmp_path, small, (24, u64(U64_MAX))), "metadata key #0", "truncated")
    name_len = after(small, "general.name") + 4
    expect(patched(tmp_path, small, (name_len, u64(1 << 50))), "general.name", "truncated")
    arr_len = after(small, "tokenizer.ggml.scores") + 8
    expect(patched(tmp_path, small, (arr_len, u64(U64_MAX))), "tokenizer.ggml.scores", "truncated")
    arr_len = after(small, "tokenizer.ggml.tokens") + 8
    expect(patched(tmp_path, small, (arr_len, u64(1 << 61))), "tokenizer.ggml.tokens", "truncated")


def test_unknown_value_types(tmp_path, small):
    vt = after(small, "general.name")
    expect(patched(tmp_path, small, (vt, u32(99))), "general.name", "unknown value type 99")
    et = after(small, "tokenizer.ggml.scores") + 4
    expect(patched(tmp_path, small, (et, u32(42))), "tokenizer.ggml.scores", "unknown array element type 42")


def test_non_utf8_strings(tmp_path, small):
    cases = {
        "tiny.context_length": "metadata key",  # a key
        "tiny test model": "general.name",  # a string value
        "h\u00e9llo": "'tokenizer.ggml.tokens'[2]",  # a string inside an array
        "blk.0.k4": "tensor name",  # a tensor name
    }
    for s, words in cases.items():
        pos = after(small, s) - len(s.encode())
        expect(patched(tmp_path, small, (pos + 1, b"\xff\xfe")), words, "not valid UTF-8")


@pytest.mark.parametrize("align", [0, 33, 2**31 + 1])
def test_alignment_not_power_of_two(tmp_path, make_gguf, align):
    p = make_gguf("aligned.gguf", alignment=64, tensors={"w": np.ones(4, np.float32)})
    data = p.read_bytes()
    pos = after(data, "general.alignment") + 4
    assert struct.unpack_from("<I", data, pos) == (64,)
    expect(patched(tmp_path, data, (pos, u32(align))), "general.alignment", "power of two")


def test_empty_missing_and_directory(tmp_path):
    empty = tmp_path / "empty.gguf"
    empty.write_bytes(b"")
    expect(empty, "empty")
    expect(tmp_path / "nope.gguf", "no such file")
    expect(tmp_path, "cannot map")


def test_missing_tensor_and_architecture(tmp_path, small, small_gguf):
    f = GGUFFile(small_gguf)
    for call in (lambda: f.tensor("nope"), lambda: f.load("nope"), lambda: f.raw("nope")):
        with pytest.raises(GGUFError, match="missing tensor 'nope'"):
            call()
    key = after(small, "general.architecture") - 1
    g = GGUFFile(patched(tmp_path, small, (key, b"X")))
    assert "general.architecturX" in g.metadata
    with pytest.raises(GGUFError, match="missing metadata 'general.architecture'"):
        _ = g.architecture
