"""ChatTemplate: the file's Jinja chat template (`tokenizer.chat_template`), rendered like transformers.

A chat template is a Jinja2 program shipped inside the model file, i.e. untrusted code. It runs in
jinja2's ImmutableSandboxedEnvironment (no attribute access to internals, no mutation of the inputs),
with the options and helpers transformers' `apply_chat_template` gives it, so a conversation renders
to the same prompt text:

    trim_blocks=True, lstrip_blocks=True    the newline after a block tag and the spaces before it go
    extensions: loopcontrols                {% break %} / {% continue %}
                generation                  {% generation %}...{% endgeneration %} renders its body
    globals: raise_exception(msg)           the template refusing a conversation -> ChatTemplateError
             strftime_now(fmt)              local time, for templates that print today's date
             bos_token, eos_token           token texts (from the vocabulary unless given)
    filter:  tojson(x, indent=None, ...)    json.dumps with ensure_ascii=False (not Jinja's HTML-safe one)
    variables: messages, add_generation_prompt, tools, documents, and any **extra

Usage:
    tmpl = ChatTemplate.from_metadata(f.metadata)           # None when the file has no template
    prompt = tmpl.render([{"role": "user", "content": "hi"}], add_generation_prompt=True)
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import jinja2
from jinja2.ext import Extension
from jinja2.sandbox import ImmutableSandboxedEnvironment

TEMPLATE_KEY = "tokenizer.chat_template"


class ChatTemplateError(ValueError):
    """A chat template could not be compiled, refused the conversation, or failed while rendering."""


class _GenerationTag(Extension):
    """`{% generation %}body{% endgeneration %}` (transformers marks assistant text with it): the body."""

    tags = {"generation"}

    def parse(self, parser: Any) -> jinja2.nodes.Node:
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        return jinja2.nodes.CallBlock(self.call_method("_render_body"), [], [], body).set_lineno(lineno)

    def _render_body(self, caller: Any) -> str:
        return caller()


class _Refused(Exception):
    """raise_exception() from inside the template; becomes ChatTemplateError outside jinja."""


def _raise_exception(message: str) -> None:
    raise _Refused(message)


def _tojson(x: Any, ensure_ascii: bool = False, indent: int | None = None, separators: Any = None,
            sort_keys: bool = False) -> str:  # fmt: skip
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)


def _plain(value: Any, where: str) -> Any:
    """A copy built from JSON types only: the template never sees (or can call methods of) caller objects."""
    if value is None or type(value) in (str, int, float, bool):
        return value
    for base in (bool, str, int, float):  # enum / numpy subclasses -> the base type
        if isinstance(value, base):
            return base(value)
    if isinstance(value, Mapping):
        return {str(k): _plain(v, f"{where}[{k!r}]") for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if hasattr(value, "item") and callable(value.item):  # numpy / torch scalar
        return _plain(value.item(), where)
    raise ChatTemplateError(f"chat template input {where} is a {type(value).__name__}; "
                            "pass plain str/int/float/bool/None, lists and dicts.")  # fmt: skip


class ChatTemplate:
    """One compiled chat template plus the token texts it may print."""

    def __init__(self, source: str, *, bos_token: str = "", eos_token: str = "") -> None:
        env = ImmutableSandboxedEnvironment(
            trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols", _GenerationTag]
        )
        env.filters["tojson"] = _tojson
        env.globals["raise_exception"] = _raise_exception
        env.globals["strftime_now"] = _strftime_now
        try:
            self._template = env.from_string(source)
        except jinja2.TemplateSyntaxError as e:
            raise ChatTemplateError(f"the model's chat template does not compile: {e.message} "
                                    f"(template line {e.lineno}).") from None  # fmt: skip
        self.source = source
        self.bos_token, self.eos_token = bos_token, eos_token

    @classmethod
    def from_metadata(cls, md: dict[str, Any], bos_token: str | None = None, eos_token: str | None = None,
                      name: str | None = None) -> ChatTemplate | None:  # fmt: skip
        """The file's template (`tokenizer.chat_template`, or `tokenizer.chat_template.<name>`); None if
        absent. bos_token / eos_token default to the texts of tokenizer.ggml.bos_token_id / eos_token_id."""
        source = md.get(TEMPLATE_KEY if name is None else f"{TEMPLATE_KEY}.{name}")
        if not source:
            return None
        if not isinstance(source, str):
            raise ChatTemplateError(f"GGUF {TEMPLATE_KEY} is a {type(source).__name__}, expected a string.")
        tokens = md.get("tokenizer.ggml.tokens") or []

        def text_of(which: str) -> str:
            tid = md.get(f"tokenizer.ggml.{which}_token_id")
            return tokens[tid] if isinstance(tid, int) and 0 <= tid < len(tokens) else ""

        return cls(source, bos_token=text_of("bos") if bos_token is None else bos_token,
                   eos_token=text_of("eos") if eos_token is None else eos_token)  # fmt: skip

    def render(self, messages: list[dict[str, Any]], add_generation_prompt: bool = True,
               **extra: Any) -> str:  # fmt: skip
        """The prompt text for `messages` ([{"role": ..., "content": ...}, ...]); `extra` (tools=,
        documents=, enable_thinking=, ...) become template variables. ChatTemplateError on failure."""
        if not isinstance(messages, (list, tuple)) or not all(isinstance(m, Mapping) for m in messages):
            raise ChatTemplateError("messages must be a list of dicts like {'role': 'user', 'content': 'hi'}")
        for i, m in enumerate(messages):
            if "role" not in m:
                raise ChatTemplateError(f"messages[{i}] has no 'role' (keys: {sorted(m)}).")
        variables = dict(tools=None, documents=None, bos_token=self.bos_token, eos_token=self.eos_token)
        variables.update(_plain(extra, "extra"))
        variables["messages"] = _plain(list(messages), "messages")
        variables["add_generation_prompt"] = add_generation_prompt
        try:
            return self._template.render(**variables)
        except _Refused as e:
            raise ChatTemplateError(f"the model's chat template refused this conversation: {e}") from None
        except jinja2.TemplateError as e:
            raise ChatTemplateError(f"the model's chat template failed while rendering: "
                                    f"{type(e).__name__}: {e}") from None  # fmt: skip
