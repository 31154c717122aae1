"""Errors in OpenAI's envelope: {"error": {"message", "type", "param", "code"}}.

Every failure the server answers is an `APIError` (or is turned into one by the handlers here), so a
client always gets the envelope, and a bad request is a 4xx, never a stack trace:

    400 invalid_request_error   malformed JSON, wrong types or values, prompt longer than the context
    401 authentication_error    missing or wrong API key (when the server has one)
    404 not_found_error         unknown model or route
    503 service_unavailable     the model is still loading, or too many requests are in flight
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

logger = logging.getLogger("rocmforge.server")

_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
          404: "not_found_error", 405: "invalid_request_error", 413: "invalid_request_error",
          415: "invalid_request_error", 429: "rate_limit_error", 503: "service_unavailable",
          500: "server_error"}  # fmt: skip


class APIError(Exception):
    def __init__(self, status: int, message: str, *, param: str | None = None, code: str | None = None,
                 type: str | None = None):  # fmt: skip
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code
        self.type = type or _TYPES.get(status, "invalid_request_error")

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def response(self) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if self.status == 401 else None
        return JSONResponse(self.body(), status_code=self.status, headers=headers)


def bad_request(message: str, param: str | None = None, code: str | None = None) -> APIError:
    return APIError(400, message, param=param, code=code)


def from_validation(err: ValidationError | RequestValidationError) -> APIError:
    """The first pydantic error as one readable 400: 'messages.0.role: Input should be ...'."""
    errors = err.errors()
    if not errors:
        return bad_request("the request body is invalid")
    e = errors[0]
    loc = [str(x) for x in e.get("loc", ()) if x != "body"]
    param = ".".join(loc) or None
    msg = e.get("msg", "invalid value")
    if e.get("type") == "json_invalid":
        return bad_request(f"the body is not valid JSON: {e.get('ctx', {}).get('error', msg)}")
    more = f" (and {len(errors) - 1} more errors)" if len(errors) > 1 else ""
    return bad_request(f"{param}: {msg}{more}" if param else f"{msg}{more}", param=param)


def install_handlers(app: FastAPI) -> None:
    @app.exception_handler(APIError)
    async def _api(_: Request, exc: APIError):
        return exc.response()

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError):
        return from_validation(exc).response()

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException):
        msg = {
            404: "no such route; see GET /v1/models, POST /v1/chat/completions, POST /v1/completions",
            405: "this route does not take that HTTP method",
        }.get(exc.status_code, str(exc.detail))
        return APIError(exc.status_code, msg).response()

    @app.exception_handler(Exception)
    async def _internal(_: Request, exc: Exception):
        logger.exception("internal error")
        return APIError(500, f"internal error: {type(exc).__name__}: {exc}").response()
