"""GGUF reader: mmap, every metadata pair, the tensor table, strict validation.

File layout (little-endian; llama.cpp's gguf.c / gguf-py's spec):
    magic "GGUF" | version u32 (2 or 3) | n_tensors u64 | n_kv u64
    n_kv × (key: string, value_type u32, value)        string = u64 length + UTF-8 bytes
    n_tensors × (name: string, n_dims u32, ne[n_dims] u64, type u32, offset u64)
    padding to `general.alignment` (default 32) | tensor data (each offset relative to its start)

We parse the header ourselves rather than through gguf.GGUFReader so that every failure is a
GGUFError saying what is wrong (truncation, absurd counts, out-of-bounds data), every loop is
bounded by the bytes actually present, and nothing is allocated beyond what the file holds.
Tensor data is never copied: `raw()` returns a numpy view into the mmap.
"""

from __future__ import annotations

import mmap
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import GGUFError
from .qtypes import qtype

GGUF_MAGIC = b"GGUF"
SUPPORTED_VERSIONS = (2, 3)
MAX_DIMS = 4  # GGML_MAX_DIMS

# value type id -> (struct format, numpy dtype) for fixed-size scalars
_SCALARS = {
    0: ("<B", np.uint8), 1: ("<b", np.int8), 2: ("<H", np.uint16), 3: ("<h", np.int16),
    4: ("<I", np.uint32), 5: ("<i", np.int32), 6: ("<f", np.float32), 7: ("<?", np.bool_),
    10: ("<Q", np.uint64), 11: ("<q", np.int64), 12: ("<d", np.float64),
}  # fmt: skip
_STRING, _ARRAY = 8, 9


@dataclass(frozen=True)
class TensorInfo:
    name: str
    qtype: int  # GGMLQuantizationType id
    qtype_name: str  # "Q4_K"
    shape: tuple[int, ...]  # torch order: reversed GGUF ne, e.g. (rows, cols)
    offset: int  # absolute byte offset in the file
    nbytes: int

    @property
    def n_elements(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n


class _Cursor:
    """Bounds-checked little-endian reads over the mapped bytes."""

    def __init__(self, buf, path: Path):
        self.buf, self.pos, self.size, self.path = buf, 0, len(buf), path

    def need(self, n: int, what: str) -> None:
        if n < 0 or self.pos + n > self.size:
            raise GGUFError(
                f"{self.path}: truncated or corrupt GGUF: {what} needs {n} bytes at offset {self.pos}, "
                f"file has {self.size}. Re-download or re-convert the file."
            )

    def scalar(self, vtype: int, what: str):
        fmt, _ = _SCALARS[vtype]
        n = struct.calcsize(fmt)
        self.need(n, what)
        (v,) = struct.unpack_from(fmt, self.buf, self.pos)
        self.pos += n
        return v

    def u32(self, what: str) -> int:
        return self.scalar(4, what)

    def u64(self, what: str) -> int:
        return self.scalar(10, what)

    def string(self, what: str) -> str:
        n = self.u64(f"length of {what}")
        self.need(n, what)
        raw = bytes(self.buf[self.pos : self.pos + n])
        self.pos += n
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise GGUFError(f"{self.path}: {what} at offset {self.pos - n} is not valid UTF-8") from None

    def value(self, vtype: int, what: str, depth: int = 0) -> Any:
        if vtype in _SCALARS:
            return self.scalar(vtype, what)
        if vtype == _STRING:
            return self.string(what)
        if vtype == _ARRAY and depth <= 1:
            etype = self.u32(f"element type of {what}")
            count = self.u64(f"length of {what}")
            if etype in _SCALARS:
                fmt, dt = _SCALARS[etype]
                nbytes = count * struct.calcsize(fmt)
                self.need(nbytes, what)
                arr = np.frombuffer(
                    self.buf, dtype=np.dtype(dt).newbyteorder("<"), count=count, offset=self.pos
                )
                self.pos += nbytes
                return arr.tolist()
            if etype in (_STRING, _ARRAY):
                self.need(count * 8, what)  # each element takes ≥ 8 bytes: bounds absurd counts
                return [self.value(etype, f"{what}[{i}]", depth + 1) for i in range(count)]
            raise GGUFError(f"{self.path}: {what} has unknown array element type {etype}")
        if vtype == _ARRAY:
            raise GGUFError(f"{self.path}: {what} is an array nested more than two deep (not supported)")
        raise GGUFError(f"{self.path}: {what} has unknown value type {vtype} (corrupt file?)")


class GGUFFile:
    """An opened, validated GGUF file. Metadata is parsed eagerly; tensor data stays mapped."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        try:
            with open(self.path, "rb") as fh:
                self._mm = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
        except FileNotFoundError:
            raise GGUFError(f"{self.path}: no such file") from None
        except (ValueError, OSError) as e:  # ValueError: empty file cannot be mapped
            raise GGUFError(
                f"{self.path}: cannot map file ({e}); is it an empty or unreadable file?"
            ) from None
        self.metadata: dict[str, Any] = {}
        self.tensors: dict[str, TensorInfo] = {}
        self._parse()

    # -- parsing ---------------------------------------------------------------------------------
    def _parse(self) -> None:
        cur = _Cursor(self._mm, self.path)
        cur.need(4, "magic")
        magic = bytes(self._mm[:4])
        if magic != GGUF_MAGIC:
            raise GGUFError(f"{self.path}: not a GGUF file (magic {magic!r}, expected b'GGUF')")
        cur.pos = 4
        self.version = cur.u32("version")
        if self.version not in SUPPORTED_VERSIONS:
            hint = " (big-endian files are not supported)" if self.version > 0xFFFF else ""
            raise GGUFError(
                f"{self.path}: GGUF version {self.version} is not supported{hint}; supported: "
                f"{SUPPORTED_VERSIONS}. Re-convert the model with a current llama.cpp."
            )
        n_tensors = cur.u64("tensor count")
        n_kv = cur.u64("metadata count")
        # Each KV pair takes ≥ 13 bytes and each tensor info ≥ 28: bound the loops by the file size.
        if n_kv * 13 > cur.size or n_tensors * 28 > cur.size:
            raise GGUFError(
                f"{self.path}: corrupt GGUF header: {n_kv} metadata pairs / {n_tensors} tensors "
                f"cannot fit in {cur.size} bytes"
            )
        for i in range(n_kv):
            key = cur.string(f"metadata key #{i}")
            vtype = cur.u32(f"type of metadata {key!r}")
            if key in self.metadata:
                raise GGUFError(f"{self.path}: duplicate metadata key {key!r}")
            self.metadata[key] = cur.value(vtype, f"metadata {key!r}")
        infos = []
        for i in range(n_tensors):
            name = cur.string(f"tensor name #{i}")
            n_dims = cur.u32(f"n_dims of tensor {name!r}")
            if not 1 <= n_dims <= MAX_DIMS:
                raise GGUFError(f"{self.path}: tensor {name!r} has {n_dims} dims (1..{MAX_DIMS} allowed)")
            ne = [cur.u64(f"dim {d} of tensor {name!r}") for d in range(n_dims)]
            infos.append(
                (name, ne, cur.u32(f"type of tensor {name!r}"), cur.u64(f"offset of tensor {name!r}"))
            )
        align = self.metadata.get("general.alignment", 32)
        if not isinstance(align, int) or align <= 0 or align & (align - 1):
            raise GGUFError(f"{self.path}: general.alignment = {align!r} is not a power of two")
        self.alignment = align
        self.data_offset = (cur.pos + align - 1) // align * align
        for name, ne, type_id, offset in infos:
            self._add_tensor(name, ne, type_id, offset)

    def _add_tensor(self, name: str, ne: list[int], type_id: int, offset: int) -> None:
        if name in self.tensors:
            raise GGUFError(f"{self.path}: duplicate tensor name {name!r}")
        try:
            q = qtype(type_id)
        except GGUFError as e:
            raise GGUFError(f"{self.path}: tensor {name!r}: {e}") from None
        if any(d <= 0 for d in ne) or ne[0] % q.block_size:
            raise GGUFError(
                f"{self.path}: tensor {name!r} has invalid shape ne={ne} for type {q.name} "
                f"(row length must be a positive multiple of {q.block_size})"
            )
        n = 1
        for d in ne:
            n *= d
        nbytes = n // q.block_size * q.type_size
        start = self.data_offset + offset
        if offset % self.alignment or start + nbytes > len(self._mm):
            raise GGUFError(
                f"{self.path}: tensor {name!r} data [{start}, {start + nbytes}) is out of bounds or "
                f"misaligned (file size {len(self._mm)}); the file is truncated or corrupt"
            )
        self.tensors[name] = TensorInfo(name, q.id, q.name, tuple(reversed(ne)), start, nbytes)

    # -- access ----------------------------------------------------------------------------------
    @property
    def architecture(self) -> str:
        arch = self.metadata.get("general.architecture")
        if not isinstance(arch, str) or not arch:
            raise GGUFError(f"{self.path}: missing metadata 'general.architecture'")
        return arch

    def tensor(self, name: str) -> TensorInfo:
        try:
            return self.tensors[name]
        except KeyError:
            raise GGUFError(f"{self.path}: missing tensor {name!r}") from None

    def raw(self, name: str) -> np.ndarray:
        """The tensor's bytes as a read-only uint8 view into the mmap (no copy)."""
        t = self.tensor(name)
        return np.frombuffer(self._mm, dtype=np.uint8, count=t.nbytes, offset=t.offset)

    def load(self, name: str):
        """The tensor dequantized to a float32 torch tensor of its torch-order shape."""
        from .dequant import dequantize

        t = self.tensor(name)
        return dequantize(self.raw(name), t.qtype, t.shape)

    def close(self) -> None:
        """Unmap the file. Tensors from `load()` are copies and stay valid; while a `raw()` view is
        alive the map cannot close and is left to the garbage collector."""
        try:
            self._mm.close()
        except BufferError:
            pass

    def __enter__(self) -> GGUFFile:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        n_kv, n_t = len(self.metadata), len(self.tensors)
        return f"GGUFFile({str(self.path)!r}, v{self.version}, {n_kv} kv, {n_t} tensors)"
