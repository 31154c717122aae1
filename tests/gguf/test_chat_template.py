"""ChatTemplate vs transformers' apply_chat_template on the real models' templates, plus the sandbox,
helpers and error paths on small templates (reference: transformers' own renderer, or `json`)."""

from __future__ import annotations

import json
from datetime import datetime

import pytest
from _tok_fixtures import hf, metadata

from rocmforge.gguf.chat_template import ChatTemplate, ChatTemplateError

SYSTEM = {"role": "system", "content": "You are terse. Réponds en français si on te parle français."}
CONVERSATIONS = [
    [{"role": "user", "content": "What is the capital of France?"}],
    [SYSTEM, {"role": "user", "content": "Hi"}],
    [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"},
     {"role": "user", "content": "3+3?"}],
    [SYSTEM, {"role": "user", "content": "Bonjour 👋 <b>x</b>\n\n  indented"},
     {"role": "assistant", "content": "Salut ! 中文 \"quoted\" {braces}"}],
    [SYSTEM, {"role": "user", "content": "a"}, {"role": "assistant", "content": "b"},
     {"role": "user", "content": "c"}, {"role": "assistant", "content": "d"},
     {"role": "user", "content": ""}],
]  # fmt: skip
TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "description": "Météo d'une ville — returns °C",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                   "required": ["city"]}}}]  # fmt: skip


def _hf_render(source: str, messages, add_generation_prompt: bool = True, **kw) -> str:
    render = pytest.importorskip("transformers.utils.chat_template_utils").render_jinja_template
    out, _ = render(conversations=[messages], chat_template=source,
                    add_generation_prompt=add_generation_prompt, **kw)  # fmt: skip
    return out[0]


@pytest.mark.slow
@pytest.mark.parametrize("add_generation_prompt", [True, False], ids=["gen_prompt", "no_gen_prompt"])
@pytest.mark.parametrize("name", ["smollm2", "qwen2.5-coder"])
def test_real_templates_match_transformers(name, add_generation_prompt):
    ref = hf(name)
    tmpl = ChatTemplate.from_metadata(metadata(name), bos_token=ref.bos_token, eos_token=ref.eos_token)
    assert tmpl is not None and tmpl.source == ref.chat_template
    for messages in CONVERSATIONS:
        want = ref.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)
        assert tmpl.render(messages, add_generation_prompt=add_generation_prompt) == want, messages


@pytest.mark.slow
def test_qwen_tools_match_transformers():
    ref = hf("qwen2.5-coder")
    tmpl = ChatTemplate.from_metadata(metadata("qwen2.5-coder"))
    assert (tmpl.bos_token, tmpl.eos_token) == (ref.bos_token, ref.eos_token)  # texts from the vocabulary
    for messages in CONVERSATIONS[:2]:
        want = ref.apply_chat_template(messages, tools=TOOLS, tokenize=False, add_generation_prompt=True)
        got = tmpl.render(messages, tools=TOOLS)
        assert got == want and "Météo" in got  # tojson keeps non-ASCII as is


@pytest.mark.slow
def test_base_model_has_no_template():
    assert ChatTemplate.from_metadata(metadata("gemma3")) is None


def test_raise_exception_is_a_clear_error():
    src = ("{% if messages[0]['role'] != 'user' %}{{ raise_exception('Conversations must start with user') }}"
           "{% endif %}ok")
    tmpl = ChatTemplate(src)
    assert tmpl.render([{"role": "user", "content": "x"}]) == "ok"
    with pytest.raises(ChatTemplateError, match="refused this conversation: Conversations must start"):
        tmpl.render([{"role": "assistant", "content": "x"}])


def test_helpers_match_transformers_renderer():
    src = (
        "{{ bos_token }}{% for m in messages %}{% if loop.index > 2 %}{% break %}{% endif %}\n"
        "  {{ m['role'] }}: {{ m | tojson }}|{{ m | tojson(indent=2) }}\n"
        "{% generation %}{{ m.content | upper }}{% endgeneration %}\n"
        "{% endfor %}{% if add_generation_prompt %}<go>{% endif %}{{ extra_flag }}"
    )
    messages = [{"role": "user", "content": "é <&> \"q\""}, {"role": "assistant", "content": "ok"},
                {"role": "user", "content": "never shown"}]  # fmt: skip
    for agp in (True, False):
        want = _hf_render(src, messages, add_generation_prompt=agp, bos_token="<s>", extra_flag=7)
        got = ChatTemplate(src, bos_token="<s>").render(messages, add_generation_prompt=agp, extra_flag=7)
        assert got == want
    assert json.dumps(messages[0], ensure_ascii=False, indent=2) in got  # transformers' tojson, not Jinja's
    assert ChatTemplate("{{ strftime_now('%Y-%m') }}").render([]) == datetime.now().strftime("%Y-%m")


@pytest.mark.parametrize(
    "src",
    [
        "{% set _ = messages.append({'role': 'x'}) %}",  # mutating the inputs
        "{{ messages.__class__.__mro__ }}",  # reaching Python internals
        "{{ ''.__class__.__subclasses__() }}",
        "{{ undefined_function() }}",
    ],
)
def test_sandbox_and_runtime_errors(src):
    messages = [{"role": "user", "content": "x"}]
    with pytest.raises(ChatTemplateError, match="failed while rendering"):
        ChatTemplate(src).render(messages)
    assert messages == [{"role": "user", "content": "x"}]


def test_bad_templates_and_inputs():
    with pytest.raises(ChatTemplateError, match="does not compile"):
        ChatTemplate("{% for m in messages %}unterminated")
    tmpl = ChatTemplate("{{ messages | length }}")
    with pytest.raises(ChatTemplateError, match="list of dicts"):
        tmpl.render("hello")
    with pytest.raises(ChatTemplateError, match="no 'role'"):
        tmpl.render([{"content": "x"}])
    with pytest.raises(ChatTemplateError, match="is a object"):
        tmpl.render([{"role": "user", "content": object()}])
    assert ChatTemplate.from_metadata({"tokenizer.ggml.tokens": ["a"]}) is None
    named = {"tokenizer.chat_template.tool_use": "T{{ bos_token }}", "tokenizer.ggml.tokens": ["<s>"],
             "tokenizer.ggml.bos_token_id": 0}  # fmt: skip
    assert ChatTemplate.from_metadata(named, name="tool_use").render([]) == "T<s>"
