"""GGUFTokenizer: the tokenizer a GGUF file describes, built from `tokenizer.ggml.*` with HF `tokenizers`.

Two vocabulary kinds, as llama.cpp names them in `tokenizer.ggml.model`:

    "gpt2"  byte-level BPE. Text is cut into words by the regexes `tokenizer.ggml.pre` names
            (pretokenizers.py), each word's UTF-8 bytes are spelled in GPT-2's 256-character byte
            alphabet, then merged pairwise, lowest merge rank first (`tokenizer.ggml.merges`).
    "llama" SentencePiece BPE. Spaces become "▁" (and one "▁" is prepended when
            `tokenizer.ggml.add_space_prefix`); starting from single characters, the adjacent pair
            whose concatenation is a vocabulary piece with the highest `tokenizer.ggml.scores` value is
            merged, until none is left; a character with no piece becomes its `<0xXX>` byte tokens.
            That is BPE with merges ranked by the score of the merged piece, which we derive from the
            vocabulary: every split (a, b) of a piece p with a, b, p all in the vocabulary, ranked by
            score(p) descending.

Token types (`tokenizer.ggml.token_type`, llama.cpp's LLAMA_TOKEN_TYPE_*): CONTROL and UNKNOWN tokens
are matched whole in the text only when `parse_special`; USER_DEFINED tokens always are, before any
other splitting (both as llama.cpp's tokenizer_st_partition). Detokenizing maps every id to its bytes
(byte alphabet undone, "▁" → " ", `<0xXX>` → one byte) and decodes the concatenation as UTF-8, so a
character split over several tokens is never broken; `skip_special` drops CONTROL/UNKNOWN tokens.
"""

from __future__ import annotations

import codecs
import threading
from collections.abc import Iterable
from typing import Any

from tokenizers import AddedToken, Regex, Tokenizer, models, normalizers, pre_tokenizers

from .errors import GGUFError
from .pretokenizers import byte_alphabet, pre_tokenizer_spec

NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6  # LLAMA_TOKEN_TYPE_*

# llama.cpp (llama_vocab::impl::load) ends generation on these names, and on the FIM pad/repo/sep
# tokens, besides the eos/eot/eom ids the file states; each is forced to CONTROL.
EOG_NAMES = (
    "<|eot_id|>", "<|im_end|>", "<|end|>", "<|return|>", "<|call|>", "<end_of_turn>", "<|endoftext|>",
    "<|eom_id|>", "<EOT>", "_<EOT>", "<|end_of_text|>", "<end_of_utterance>",
)  # fmt: skip
FIM_EOG_NAMES = {
    "fim_pad": ("<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>"),
    "fim_rep": ("<|fim_repo|>", "<|repo_name|>", "<fim-repo>", "<REPO>", "<reponame>"),
    "fim_sep": ("<|file_sep|>",),
}


def _key(md: dict[str, Any], name: str, default: Any = None) -> Any:
    return md.get(f"tokenizer.ggml.{name}", default)


class GGUFTokenizer:
    """Encode/decode like llama.cpp's llama_tokenize / llama_detokenize for the file's vocabulary."""

    def __init__(
        self, *, kind: str, tokens: list[str], types: list[int], ids: dict[str, int], backend: Tokenizer,
        pieces: list[bytes], bos_id: int | None, eos_id: int | None, eog_ids: set[int], add_bos: bool,
        add_eos: bool, add_space_prefix: bool,
    ) -> None:  # fmt: skip
        self.kind = kind  # "gpt2" | "llama"
        self.vocab_size = len(tokens)
        self.bos_id, self.eos_id, self.eog_ids = bos_id, eos_id, set(eog_ids)
        self.add_bos, self.add_eos, self.add_space_prefix = add_bos, add_eos, add_space_prefix
        self._tokens, self._types, self._backend, self._pieces = tokens, types, backend, pieces
        self._special = frozenset(i for i, t in enumerate(types) if t in (CONTROL, UNKNOWN))
        self._ids = ids  # vocabulary text -> id
        # NOTE: `encode_special_tokens` is state on the shared backend; the lock keeps encode thread-safe.
        self._lock = threading.Lock()

    @classmethod
    def from_metadata(cls, md: dict[str, Any]) -> GGUFTokenizer:
        """Build from `GGUFFile(path).metadata`; GGUFError if the file's vocabulary cannot be used."""
        kind, tokens = _key(md, "model"), _key(md, "tokens")
        if kind not in ("gpt2", "llama"):
            raise GGUFError(f"GGUF tokenizer.ggml.model = {kind!r} is not supported by rocmforge "
                            "(supported: 'gpt2' byte-level BPE, 'llama' SentencePiece).")  # fmt: skip
        if not tokens:
            raise GGUFError("GGUF file has no tokenizer.ggml.tokens: it carries no vocabulary to tokenize.")
        n = len(tokens)
        types = [int(t) for t in _key(md, "token_type", [NORMAL] * n)]
        # NOTE: llama.cpp renames empty tokens, so that text -> id stays one-to-one.
        tokens = [t if t else f"[EMPTY_{i}]" for i, t in enumerate(tokens)]
        if len(types) != n:
            raise GGUFError(f"GGUF tokenizer.ggml.token_type has {len(types)} entries for {n} tokens.")
        ids = {t: i for i, t in enumerate(tokens)}
        if len(ids) != n:
            raise GGUFError(f"GGUF tokenizer.ggml.tokens has {n - len(ids)} duplicate entries.")
        bos_id, eos_id, eog_ids = _special_ids(md, ids, types, kind)
        if kind == "gpt2":
            spec = pre_tokenizer_spec(_key(md, "pre"))
            backend, pieces = _build_bpe(tokens, types, ids, _key(md, "merges"), spec)
            # NOTE: llama.cpp's BPE path never prepends a space, whatever add_space_prefix says.
            add_bos_default, add_space_prefix = spec.add_bos, False
        else:
            add_space_prefix = bool(_key(md, "add_space_prefix", True))
            unk_id = _key(md, "unknown_token_id")
            unk = tokens[unk_id] if unk_id is not None and 0 <= unk_id < n else None
            backend, pieces = _build_spm(tokens, types, ids, _key(md, "scores"), add_space_prefix, unk)
            add_bos_default = True
        add_bos = bool(_key(md, "add_bos_token", add_bos_default))
        add_eos = bool(_key(md, "add_eos_token", False))
        for flag, tid, what in ((add_bos, bos_id, "bos"), (add_eos, eos_id, "eos")):
            if flag and tid is None:
                raise GGUFError(f"GGUF asks to add a {what} token (tokenizer.ggml.add_{what}_token) but "
                                f"tokenizer.ggml.{what}_token_id is missing or out of range.")  # fmt: skip
        return cls(kind=kind, tokens=tokens, types=types, ids=ids, backend=backend, pieces=pieces,
                   bos_id=bos_id, eos_id=eos_id, eog_ids=eog_ids, add_bos=add_bos, add_eos=add_eos,
                   add_space_prefix=add_space_prefix)  # fmt: skip

    def encode(self, text: str, add_special: bool = True, parse_special: bool = True) -> list[int]:
        """Token ids of `text`. add_special: prepend BOS / append EOS as the file asks (no second BOS when
        the text already starts with one); parse_special: match control-token text such as
        "<|im_start|>" as that one token (else it is tokenized as plain text)."""
        with self._lock:
            self._backend.encode_special_tokens = not parse_special
            ids = self._backend.encode(text, add_special_tokens=False).ids
        if add_special and self.add_bos and not (ids and ids[0] == self.bos_id):
            ids.insert(0, self.bos_id)
        if add_special and self.add_eos:
            ids.append(self.eos_id)
        return ids

    def token_bytes(self, token_id: int, skip_special: bool = False) -> bytes:
        """The bytes token `token_id` stands for (b"" for a skipped special or an unused token)."""
        if not 0 <= token_id < self.vocab_size:
            raise ValueError(f"token id {token_id} is outside the vocabulary (0..{self.vocab_size - 1}).")
        if skip_special and token_id in self._special:
            return b""
        return self._pieces[token_id]

    def _first_bytes(self, token_id: int, skip_special: bool) -> bytes:
        # NOTE: llama_detokenize drops the space add_space_prefix put before the text, unless BOS leads.
        piece = self.token_bytes(token_id, skip_special)
        if self.add_space_prefix and token_id != self.bos_id and piece.startswith(b" "):
            return piece[1:]
        return piece

    def decode(self, ids: Iterable[int], skip_special: bool = False) -> str:
        """Text of `ids`; bytes that are not valid UTF-8 (a cut-off character) become U+FFFD."""
        ids = list(ids)
        if not ids:
            return ""
        rest = b"".join(self.token_bytes(i, skip_special) for i in ids[1:])
        return (self._first_bytes(ids[0], skip_special) + rest).decode("utf-8", errors="replace")

    def stream_decoder(self, skip_special: bool = False) -> StreamDecoder:
        """Incremental decode: `push(id)` returns the newly completed text, `flush()` the rest;
        the pieces joined equal `decode(all ids)`."""
        return StreamDecoder(self, skip_special)

    def id_to_piece(self, token_id: int) -> str:
        """The vocabulary entry as the GGUF spells it ("Ġthe", "▁the", "<|im_end|>")."""
        return self._tokens[token_id]

    def piece_to_id(self, piece: str) -> int | None:
        """Inverse of id_to_piece; None if `piece` is not a vocabulary entry."""
        return self._ids.get(piece)

    def is_special(self, token_id: int) -> bool:
        """CONTROL or UNKNOWN token (dropped by skip_special)."""
        return token_id in self._special


class StreamDecoder:
    """Bytes in, text out, holding back an incomplete UTF-8 character until its last byte arrives.
    The first token pushed is treated as decode() treats ids[0] (add_space_prefix's space dropped)."""

    def __init__(self, tok: GGUFTokenizer, skip_special: bool) -> None:
        self._tok, self._skip, self._first = tok, skip_special, True
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def push(self, token_id: int) -> str:
        """The text completed by this token ("" while a character is still unfinished)."""
        if self._first:
            self._first = False
            return self._utf8.decode(self._tok._first_bytes(token_id, self._skip))
        return self._utf8.decode(self._tok.token_bytes(token_id, self._skip))

    def flush(self) -> str:
        """Whatever is held back (an unfinished character comes out as U+FFFD); the decoder is reset."""
        out = self._utf8.decode(b"", final=True)
        self._utf8.reset()
        self._first = True
        return out


def _special_ids(md: dict[str, Any], ids: dict[str, int], types: list[int], kind: str):
    """(bos_id, eos_id, eog_ids) as llama.cpp derives them; marks named end/FIM tokens CONTROL in `types`."""
    n = len(types)

    def tid(name: str, default: int | None = None) -> int | None:
        v = _key(md, f"{name}_token_id", default)
        return int(v) if v is not None and 0 <= int(v) < n else None

    default_bos, default_eos = (1, 2) if kind == "llama" else (None, None)
    bos_id, eos_id = tid("bos", default_bos), tid("eos", default_eos)
    eog = {i for i in (eos_id, tid("eot"), tid("eom")) if i is not None}
    named = [ids[s] for s in EOG_NAMES if s in ids]
    for fim, names in FIM_EOG_NAMES.items():
        stated = tid(fim)
        if stated is not None:
            eog.add(stated)
        else:
            named += [ids[s] for s in names if s in ids][:1]
    eog.update(named)
    for i in named:  # NOTE: llama.cpp overrides a "control-looking" token's type to CONTROL
        types[i] = CONTROL
    return bos_id, eos_id, eog


def _add_special_tokens(backend: Tokenizer, tokens: list[str], types: list[int]) -> None:
    # Control/unknown: matched only when parse_special (encode_special_tokens=False); user-defined: always.
    special = [AddedToken(tokens[i], special=True, normalized=False)
               for i, t in enumerate(types) if t in (CONTROL, UNKNOWN)]  # fmt: skip
    user = [AddedToken(tokens[i], special=False, normalized=False)
            for i, t in enumerate(types) if t == USER_DEFINED]  # fmt: skip
    if special:
        backend.add_special_tokens(special)
    if user:
        backend.add_tokens(user)


def _build_bpe(tokens, types, ids, merges, spec) -> tuple[Tokenizer, list[bytes]]:
    if not merges:
        raise GGUFError("GGUF byte-level BPE vocabulary (tokenizer.ggml.model = 'gpt2') has no "
                        "tokenizer.ggml.merges.")
    alphabet = byte_alphabet()
    # Byte-alphabet character -> the Latin-1 character of its byte; other Latin-1 characters -> U+FFFE,
    # so that `.encode("latin-1")` fails exactly on text that is not byte-alphabet spelling.
    undo = {ord(c): chr(b) for b, c in alphabet.items()}
    undo.update({c: "\ufffe" for c in range(256) if c not in undo})
    vocab, pieces = ids, []
    for i, (text, kind) in enumerate(zip(tokens, types)):
        piece = text.encode()
        if kind in (NORMAL, UNUSED):
            try:
                piece = text.translate(undo).encode("latin-1")
            except UnicodeEncodeError:
                # A normal token in plain UTF-8, not byte spelling: respell it so the merges can reach it.
                vocab = dict(ids) if vocab is ids else vocab
                del vocab[text]
                vocab["".join(alphabet[b] for b in piece)] = i
            if kind == UNUSED:
                piece = b""
        pieces.append(piece)
    pairs = []
    for m in merges:
        cut = m.find(" ", 1)  # NOTE: as llama.cpp: the first space after position 0 separates the pair
        if cut < 0:
            raise GGUFError(f"GGUF tokenizer.ggml.merges entry {m!r} is not 'left right'.")
        pairs.append((m[:cut], m[cut + 1 :]))
    backend = Tokenizer(models.BPE(vocab=vocab, merges=pairs, ignore_merges=spec.ignore_merges))
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Split(Regex(r), behavior="isolated") for r in spec.regexes]
        + [pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)]
    )
    _add_special_tokens(backend, tokens, types)
    return backend, pieces


def _build_spm(tokens, types, vocab, scores, add_space_prefix, unk) -> tuple[Tokenizer, list[bytes]]:
    n = len(tokens)
    if scores is None or len(scores) != n:
        raise GGUFError("GGUF SentencePiece vocabulary (tokenizer.ggml.model = 'llama') needs "
                        f"tokenizer.ggml.scores with one score per token ({n}).")  # fmt: skip
    ranked = []  # (-score of the merged piece, its id, left, right)
    # Every token that is a proper prefix of piece p sits on `chain` when p comes up in sorted order
    # (all strings between a prefix and p share that prefix), so only those splits need a lookup.
    chain: list[str] = []
    for i in sorted(range(n), key=tokens.__getitem__):
        if types[i] in (BYTE, USER_DEFINED):  # NOTE: user-defined text never reaches the merges
            continue
        piece = tokens[i]
        while chain and not piece.startswith(chain[-1]):
            chain.pop()
        for left in chain:
            right = piece[len(left) :]
            if right in vocab:
                ranked.append((-scores[i], i, left, right))
        chain.append(piece)
    # NOTE: llama.cpp breaks score ties by text position; BPE ranks must be distinct, so ties go by id.
    ranked.sort()
    unk = unk or next((tokens[i] for i, t in enumerate(types) if t == UNKNOWN), None)
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[(a, b) for _, _, a, b in ranked], unk_token=unk,
                                   fuse_unk=True, byte_fallback=True))  # fmt: skip
    steps = [normalizers.Prepend("▁")] if add_space_prefix else []
    backend.normalizer = normalizers.Sequence([*steps, normalizers.Replace(" ", "▁")])
    _add_special_tokens(backend, tokens, types)
    pieces = [text.replace("▁", " ").encode() for text in tokens]
    for i, kind in enumerate(types):
        if kind == BYTE:
            pieces[i] = bytes([int(tokens[i][3:5], 16)])
        elif kind == UNUSED:
            pieces[i] = b""
        elif kind in (CONTROL, UNKNOWN, USER_DEFINED):  # NOTE: as llama.cpp, "▁" stays in these
            pieces[i] = tokens[i].encode()
    return backend, pieces
