"""Every HTTP error in the OpenAI shape ``{"error": {message, type, param, code}}``.

FastAPI answers unknown routes, wrong methods and invalid requests with its own
``{"detail": …}`` bodies; the ``openai`` SDK reads ``error.message`` and ``error.code`` from
error bodies, so those would surface as an unexplained failure. These handlers replace them.
"""

from __future__ import annotations

import re
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

# Machine-readable codes for the statuses the framework produces itself.
_CODES = {
    404: "not_found",
    405: "method_not_allowed",
    413: "request_too_large",
    415: "unsupported_content_type",
}


def error_body(
    message: str, code: str | None, param: str | None = None, type_: str = "invalid_request_error"
) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def _http_exception(request: Request, exc: HTTPException) -> JSONResponse:
    status = exc.status_code
    if status == 404:
        message = (
            f"Unknown request URL: {request.method} {request.url.path}. voxgate serves "
            "GET /v1/realtime (WebSocket), POST /v1/realtime/calls and "
            "POST /v1/realtime/calls/{call_id}/hangup."
        )
    elif status == 405:
        message = f"Method {request.method} is not allowed for {request.url.path}."
    elif isinstance(exc.detail, str) and exc.detail != _phrase(status):
        message = exc.detail
    else:
        message = _phrase(status)
    type_ = "server_error" if status >= 500 else "invalid_request_error"
    code = _CODES.get(status, re.sub(r"[^a-z0-9]+", "_", _phrase(status).lower()).strip("_"))
    body = error_body(message, code, None, type_)
    return JSONResponse(body, status_code=status, headers=getattr(exc, "headers", None))


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:  # a status the standard library does not name
        return f"HTTP {status}"


def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    first = exc.errors()[0]
    # loc is ("query" | "path" | "body" | "header", name, …): the name is the parameter.
    loc = [str(part) for part in first.get("loc", ())[1:]]
    param = ".".join(loc) or None
    message = f"Invalid value for '{param}': {first.get('msg', 'invalid')}."
    if first.get("type") == "missing":
        message = f"Missing required parameter: '{param}'."
    code = "missing_required_parameter" if first.get("type") == "missing" else "invalid_value"
    # 400, not FastAPI's 422: the OpenAI API answers invalid parameters with 400.
    return JSONResponse(error_body(message, code, param), status_code=400)


def install(app: FastAPI) -> None:
    """Route every framework-made HTTP error through the OpenAI error shape."""

    async def http_exception(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, HTTPException)
        return _http_exception(request, exc)

    async def validation_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        return _validation_error(request, exc)

    async def server_error(request: Request, exc: Exception) -> JSONResponse:
        # The exception itself is still logged by the server; the client learns only that
        # the failure was ours.
        body = error_body(
            "The server had an error processing your request.", "server_error", None, "server_error"
        )
        return JSONResponse(body, status_code=500)

    app.add_exception_handler(HTTPException, http_exception)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(Exception, server_error)
