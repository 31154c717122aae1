"""Request bodies of the OpenAI API (and vLLM's extras) as strict pydantic models.

Strict: a wrong JSON type is an error (no "5" for 5, no true for 1), read as 400 by the server;
unknown fields are ignored, as OpenAI-compatible servers do. Values are range-checked by building
`SamplingParams` (see `sampling_params`), whose messages name the field.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from ..sampling_params import SamplingParams
from .errors import APIError, bad_request

MAX_N = 16  # samples per prompt
MAX_TOP_LOGPROBS = 20
MAX_STOP = 16  # stop strings per request
MAX_PROMPTS = 64  # prompts in one /v1/completions request


class _Strict(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)


class TextPart(_Strict):
    type: Literal["text"]  # image / audio parts are not supported: a 400 names the type
    text: str


class ChatMessage(_Strict):
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart] | None = None  # None only for an assistant turn
    name: str | None = None

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(p.text for p in self.content)


class StreamOptions(_Strict):
    include_usage: bool = False


class JsonSchemaSpec(_Strict):
    name: str | None = None
    schema_: dict | bool | None = Field(default=None, alias="schema")
    strict: bool | None = None
    description: str | None = None


class ResponseFormat(_Strict):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaSpec | None = None


class _Sampling(_Strict):
    model: str | None = None  # None = the served model
    n: int = 1
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    min_p: float | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    repetition_penalty: float | None = None
    seed: int | None = None
    stop: str | list[str] | None = None
    stop_token_ids: list[int] | None = None
    ignore_eos: bool = False
    min_tokens: int = 0
    skip_special_tokens: bool = True
    include_stop_str_in_output: bool = False
    stream: bool = False
    stream_options: StreamOptions | None = None
    response_format: ResponseFormat | None = None
    user: str | None = None

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)

    def json_schema(self) -> tuple[bool, dict | None]:
        """(constrained?, schema); schema None with constrained = any JSON object."""
        rf = self.response_format
        if rf is None or rf.type == "text":
            return False, None
        if rf.type == "json_object":
            return True, None
        if rf.json_schema is None or not isinstance(rf.json_schema.schema_, dict):
            raise bad_request("response_format json_schema needs json_schema.schema, a JSON schema object",
                              param="response_format.json_schema.schema")  # fmt: skip
        return True, rf.json_schema.schema_


class ChatCompletionRequest(_Sampling):
    messages: list[ChatMessage]
    max_tokens: int | None = None  # None = up to the context end
    max_completion_tokens: int | None = None  # OpenAI's newer name; wins over max_tokens
    logprobs: bool = False
    top_logprobs: int | None = None
    add_generation_prompt: bool = True


class CompletionRequest(_Sampling):
    prompt: str | list[str] | list[int] | list[list[int]]
    max_tokens: int | None = 16
    logprobs: int | None = None  # top-K per token (legacy completions shape)
    echo: bool = False


class TokenizeRequest(_Strict):
    model: str | None = None
    prompt: str | None = None
    messages: list[ChatMessage] | None = None
    add_special_tokens: bool = True
    add_generation_prompt: bool = True


class DetokenizeRequest(_Strict):
    model: str | None = None
    tokens: list[int]


_FIELD = re.compile(r"SamplingParams\.(\w+)")


def sampling_params(req: _Sampling, *, max_tokens: int | None, logprobs: int | None) -> SamplingParams:
    """The request's SamplingParams; any bad value -> APIError 400 naming the field."""
    if not 1 <= req.n <= MAX_N:
        raise bad_request(f"n must be between 1 and {MAX_N}, got {req.n}", param="n")
    if logprobs is not None and not 0 <= logprobs <= MAX_TOP_LOGPROBS:
        raise bad_request(
            f"logprobs must be between 0 and {MAX_TOP_LOGPROBS}, got {logprobs}", param="logprobs"
        )
    if isinstance(req.stop, list) and len(req.stop) > MAX_STOP:
        raise bad_request(f"stop takes at most {MAX_STOP} strings, got {len(req.stop)}", param="stop")
    if req.temperature is not None and req.temperature > 2.0:
        raise bad_request(f"temperature must be between 0 and 2, got {req.temperature}", param="temperature")
    opt = {k: v for k, v in {
        "temperature": req.temperature, "top_p": req.top_p, "top_k": req.top_k, "min_p": req.min_p,
        "presence_penalty": req.presence_penalty, "frequency_penalty": req.frequency_penalty,
        "repetition_penalty": req.repetition_penalty,
    }.items() if v is not None}  # fmt: skip
    try:
        return SamplingParams(
            n=req.n, seed=req.seed, max_tokens=max_tokens, min_tokens=req.min_tokens, stop=req.stop,
            stop_token_ids=req.stop_token_ids, ignore_eos=req.ignore_eos, logprobs=logprobs,
            skip_special_tokens=req.skip_special_tokens,
            include_stop_str_in_output=req.include_stop_str_in_output, **opt,
        )  # fmt: skip
    except ValueError as e:
        m = _FIELD.search(str(e))
        raise APIError(400, str(e).replace("SamplingParams.", ""), param=m.group(1) if m else None) from e


def chat_max_tokens(req: ChatCompletionRequest) -> int | None:
    return req.max_completion_tokens if req.max_completion_tokens is not None else req.max_tokens
