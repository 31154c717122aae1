"""The FastAPI app: routes, API key, body parsing; `serve_main` runs it under uvicorn.

    POST /v1/chat/completions, /v1/completions   (also without /v1)      serving.py
    GET  /v1/models, /health (503 while loading), /metrics (Prometheus)
    POST /tokenize, /detokenize                  (vLLM's shapes)

Bodies are parsed here, not by FastAPI: the raw bytes must be UTF-8 JSON matching a strict model;
anything else is a 400 (415 for a non-JSON content type, 413 past MAX_BODY) in OpenAI's envelope.
The model loads in a background thread after the socket is up, so /health can answer 503 meanwhile.
"""

from __future__ import annotations

import contextlib
import hmac
import logging
import threading
import time
from collections.abc import Callable

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from pydantic import ValidationError

from ..engine.async_engine import AsyncEngine
from .errors import APIError, bad_request, from_validation, install_handlers
from .metrics import Metrics
from .protocol import (
    ChatCompletionRequest,
    CompletionRequest,
    DetokenizeRequest,
    TokenizeRequest,
    _Strict,  # fmt: skip
)
from .serving import Runtime, chat_completions, check_model, completions
from .structured import JsonGuide

logger = logging.getLogger("rocmforge.server")

MAX_BODY = 8 << 20  # bytes
_OPEN = ("/health", "/metrics", "/ping")  # no API key needed


class _ApiKey:
    """Pure ASGI middleware (a BaseHTTPMiddleware would hide client disconnects from the routes)."""

    def __init__(self, app, key: str):
        self.app, self.key = app, key.encode()

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["path"] not in _OPEN:
            got = dict(scope["headers"]).get(b"authorization", b"")
            token = got[7:].strip() if got[:7].lower() == b"bearer " else b""
            if not hmac.compare_digest(token, self.key):
                what = "no API key was given" if not got else "the API key is wrong"
                err = APIError(401, f"{what}; send 'Authorization: Bearer <key>'", code="invalid_api_key")
                await err.response()(scope, receive, send)
                return
        await self.app(scope, receive, send)


def make_runtime(llm, model_name: str, max_pending: int = 512) -> Runtime:
    """Wrap a loaded LLM: the AsyncEngine takes over its engine (do not call llm.generate meanwhile)."""
    metrics = Metrics(model_name)
    engine = AsyncEngine(llm.engine, observer=metrics, max_pending=max_pending)
    guide = JsonGuide(llm.tokenizer, llm.model_config.vocab_size)
    return Runtime(llm=llm, engine=engine, metrics=metrics, guide=guide, model_name=model_name,
                   created=int(time.time()))  # fmt: skip


async def parse(request: Request, model: type[_Strict]):
    ctype = request.headers.get("content-type", "")
    if "json" not in ctype.lower():
        raise APIError(
            415, f"the body must be JSON (Content-Type: application/json), got {ctype or 'none'!r}"
        )
    raw = await request.body()
    if len(raw) > MAX_BODY:
        raise APIError(413, f"the body has {len(raw)} bytes; the limit is {MAX_BODY}")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise bad_request(f"the body is not valid UTF-8 (byte {e.start})") from e
    try:
        return model.model_validate_json(text)
    except ValidationError as e:
        raise from_validation(e) from e


def create_app(
    llm=None,
    *,
    model_name: str = "smollm2",
    api_key: str | None = None,
    loader: Callable[[], object] | None = None,
    max_pending: int = 512,
) -> FastAPI:
    """An app over a loaded `llm`, or over `loader()` run in a thread (503 until it returns)."""
    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        if app.state.runtime is not None:
            app.state.runtime.engine.shutdown()

    app = FastAPI(title="rocmforge", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)
    install_handlers(app)
    app.state.runtime = None if llm is None else make_runtime(llm, model_name, max_pending)
    app.state.load_error = None

    if llm is None and loader is not None:

        def load():
            try:
                app.state.runtime = make_runtime(loader(), model_name, max_pending)
                logger.info("rocmforge: %s is loaded and serving", model_name)
            except Exception as e:  # keep answering: /health says why
                logger.exception("loading the model failed")
                app.state.load_error = f"{type(e).__name__}: {e}"

        threading.Thread(target=load, name="rocmforge-load", daemon=True).start()

    def runtime() -> Runtime:
        rt = app.state.runtime
        if rt is None:
            why = (
                f"loading the model failed: {app.state.load_error}"
                if app.state.load_error
                else "the model is still loading; retry in a moment"
            )
            raise APIError(503, why, code="model_loading")
        return rt

    if api_key is not None:
        app.add_middleware(_ApiKey, key=api_key)

    async def chat(request: Request):
        return await chat_completions(runtime(), request, await parse(request, ChatCompletionRequest))

    async def complete(request: Request):
        return await completions(runtime(), request, await parse(request, CompletionRequest))

    for prefix in ("/v1", ""):
        app.add_api_route(f"{prefix}/chat/completions", chat, methods=["POST"])
        app.add_api_route(f"{prefix}/completions", complete, methods=["POST"])

    @app.get("/v1/models")
    async def models():
        rt = runtime()
        return {
            "object": "list",
            "data": [
                {
                    "id": rt.model_name,
                    "object": "model",
                    "created": rt.created,
                    "owned_by": "rocmforge",
                    "max_model_len": rt.llm.max_model_len,
                }
            ],
        }

    @app.get("/health")
    async def health():
        runtime()
        return {"status": "ok"}

    @app.get("/ping")
    async def ping():
        return {"status": "ok"}

    @app.get("/metrics")
    async def metrics():
        rt = runtime()
        return Response(rt.metrics.render(), media_type=rt.metrics.content_type)

    @app.post("/tokenize")
    async def tokenize(request: Request):
        rt, req = runtime(), await parse(request, TokenizeRequest)
        check_model(rt, req.model)
        if (req.prompt is None) == (req.messages is None):
            raise bad_request("give exactly one of prompt or messages", param="prompt")
        if req.messages is not None:
            conv = [{"role": "system" if m.role == "developer" else m.role, "content": m.text()}
                    for m in req.messages]  # fmt: skip
            try:
                text = rt.llm.render_chat(conv, add_generation_prompt=req.add_generation_prompt)
            except Exception as e:
                raise bad_request(f"the chat template rejected the messages: {e}", param="messages") from e
            ids = rt.llm.tokenize(text, add_special=False)
        else:
            ids = rt.llm.tokenize(req.prompt, add_special=req.add_special_tokens)
        return {"tokens": ids, "count": len(ids), "max_model_len": rt.llm.max_model_len}

    @app.post("/detokenize")
    async def detokenize(request: Request):
        rt, req = runtime(), await parse(request, DetokenizeRequest)
        check_model(rt, req.model)
        V = rt.llm.model_config.vocab_size
        bad = [t for t in req.tokens if not 0 <= t < V]
        if bad:
            raise bad_request(f"token id {bad[0]} is outside the vocabulary (size {V})", param="tokens")
        return JSONResponse({"prompt": rt.llm.detokenize(req.tokens)})

    return app


def serve_main(a) -> int:
    """`rocmforge serve`: args model, host, port, api_key, served_model_name, device, max_model_len."""
    import uvicorn

    from ..llm import LLM

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    name = a.served_model_name or a.model or "smollm2"

    def loader():
        llm = LLM(a.model, device=a.device, max_model_len=a.max_model_len,
                  gpu_memory_utilization=a.gpu_memory_utilization,
                  tensor_parallel_size=a.tensor_parallel_size, max_num_seqs=a.max_num_seqs,
                  batch_invariant=a.batch_invariant)
        engine = getattr(llm, "engine", None)
        if engine is not None and hasattr(engine, "capture_graphs"):
            t = time.perf_counter()  # a first-time compile would otherwise land inside a request
            if buckets := engine.capture_graphs():
                logger.info("rocmforge: decode graphs captured for batch sizes %s in %.1f s", buckets,
                            time.perf_counter() - t)
        return llm
    app = create_app(model_name=name, api_key=a.api_key, loader=loader)
    logger.info("rocmforge: serving %s on http://%s:%d (OpenAI API under /v1)", name, a.host, a.port)
    uvicorn.run(app, host=a.host, port=a.port, log_level="warning", access_log=False)
    return 0
