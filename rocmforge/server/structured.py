"""response_format json_object / json_schema as constrained decoding: a token mask per step.

A JSON schema (json_object = {"type": "object"}) is compiled by xgrammar into a pushdown automaton
over our vocabulary. Each step, for each sample, the matcher first accepts the tokens sampled since
the last step, then yields the set A of tokens that keep the output a prefix of a valid document:

    z_t <- z_t        if t in A
    z_t <- -inf       otherwise          (EOS/EOG is in A only once the document is complete)

so the text, when it ends by EOS (finish_reason "stop"), parses and validates against the schema.
A length cut (max_tokens) can still end it early, as with OpenAI.

The vocabulary is handed to xgrammar as raw bytes (`GGUFTokenizer.token_bytes`): this works for
byte-level BPE and SentencePiece alike; control tokens get b"" so they are never allowed.
Whitespace is restricted to none between tokens (`any_whitespace=False`): a small model otherwise
can loop on spaces and newlines until max_tokens.
"""

from __future__ import annotations

import json
import threading
from functools import lru_cache

import torch


class StructuredOutputError(ValueError):
    """A response_format that cannot be used (bad schema, xgrammar missing)."""


def _xgrammar():
    try:
        import xgrammar
    except ImportError as e:  # pragma: no cover - depends on the install
        raise StructuredOutputError(
            "response_format json_object / json_schema needs the `xgrammar` package; "
            "pip install xgrammar (it uses the installed torch)"
        ) from e
    return xgrammar


class JsonGuide:
    """Compiles schemas for one tokenizer; `processor(schema)` gives a per-request logits processor."""

    def __init__(self, tokenizer, model_vocab_size: int):
        self.tokenizer, self.model_vocab_size = tokenizer, model_vocab_size
        self._compiler = None
        self._lock = threading.Lock()

    def _get_compiler(self):
        with self._lock:
            if self._compiler is None:
                xgr = _xgrammar()
                tok = self.tokenizer
                vocab = [b"" if tok.is_special(i) else tok.token_bytes(i) for i in range(tok.vocab_size)]
                stops = sorted(int(t) for t in tok.eog_ids)
                info = xgr.TokenizerInfo(vocab, vocab_type=xgr.VocabType.RAW,
                                         vocab_size=self.model_vocab_size, stop_token_ids=stops)  # fmt: skip
                self._compiler = xgr.GrammarCompiler(info, max_threads=1)
            return self._compiler

    def compile(self, schema: dict | None):
        """schema None = any JSON object (json_object). Raises StructuredOutputError on a bad schema."""
        text = json.dumps({"type": "object"} if schema is None else schema, sort_keys=True)
        return _compile_cached(self, text)

    def processor(self, schema: dict | None) -> JsonProcessor:
        return JsonProcessor(self.compile(schema), self.model_vocab_size)


@lru_cache(maxsize=64)
def _compile_cached(guide: JsonGuide, schema_text: str):
    compiler = guide._get_compiler()
    try:
        return compiler.compile_json_schema(schema_text, any_whitespace=False)
    except Exception as e:  # xgrammar raises RuntimeError / InvalidJSONError subclasses
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise StructuredOutputError(f"response_format json_schema cannot be used: {first}") from e


class JsonProcessor:
    """The logits processor of one request: one grammar matcher per sample.

    NOTE: a sample is known by the identity of its output-ids list, which the engine keeps for the
    sample's whole life; the processor lives only as long as its request.
    """

    def __init__(self, compiled, vocab_size: int):
        self.compiled, self.vocab_size = compiled, vocab_size
        self._state: dict[int, list] = {}  # id(output_ids) -> [matcher, tokens accepted, output_ids]
        self._bitmask = None

    def __call__(self, output_ids: list[int], logits: torch.Tensor) -> torch.Tensor:  # (V,) -> (V,)
        xgr = _xgrammar()
        st = self._state.get(id(output_ids))
        if st is None:
            st = self._state[id(output_ids)] = [xgr.GrammarMatcher(self.compiled), 0, output_ids]
        matcher = st[0]
        for t in output_ids[st[1] :]:
            matcher.accept_token(int(t))
        st[1] = len(output_ids)
        if self._bitmask is None:
            self._bitmask = xgr.allocate_token_bitmask(1, self.vocab_size)  # (1, ceil(V / 32)) int32
        matcher.fill_next_token_bitmask(self._bitmask)
        z = logits.float().clone().unsqueeze(0)  # (1, V)
        xgr.apply_token_bitmask_inplace(z, self._bitmask)
        return z[0]
