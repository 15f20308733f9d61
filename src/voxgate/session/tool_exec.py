"""Running server tools: the server-wide registry of declared tools, the HTTP and Python
executors, per-tool concurrency and timeouts.

An HTTP tool gets one request: a JSON body with the arguments and the caller's identity,
the identity again in ``X-Voxgate-*`` headers, an ``Idempotency-Key`` and, when a signing
secret is set, ``X-Voxgate-Signature`` over the timestamp and the body
(`voxgate.control.tools.signing`). A Python tool is ``module:function`` called with the
arguments as keyword arguments (awaited when async, in a worker thread when not).
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import json
import logging
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import httpx

from ..control.tools import ToolSpec, signature
from ..control.tools.signing import HEADER

log = logging.getLogger(__name__)
Status = Literal["ok", "error", "timeout"]
# The most of a tool's answer the model reads; more is cut (the context is not a dump).
MAX_OUTPUT_CHARS = 64_000


@dataclass(frozen=True, slots=True)
class Caller:
    key_id: str | None
    tenant: str | None
    user_hash: str | None
    session_id: str

    def wire(self) -> dict[str, str | None]:
        return {
            "key_id": self.key_id,
            "tenant": self.tenant,
            "user": self.user_hash,
            "session_id": self.session_id,
        }


@dataclass(frozen=True, slots=True)
class Executed:
    status: Status
    output: str  # what the model reads (the function_call_output)
    http_status: int | None = None


class ToolRegistry:
    """The server's tools, checked and prepared at start-up (headers resolved, Python
    targets imported), and what every session shares: the HTTP client and the per-tool
    concurrency limits."""

    def __init__(
        self,
        specs: list[ToolSpec],
        *,
        signing_secret: str | None = None,
        env: Mapping[str, str] | None = None,
        wall: Callable[[], float] = time.time,
    ) -> None:
        env = os.environ if env is None else env
        self.specs = {s.name: s for s in specs}
        self.signing_secret = signing_secret
        self.wall = wall
        self._headers = {s.name: s.resolved_headers(env) for s in specs if s.kind == "http"}
        self._targets = {s.name: _import(s) for s in specs if s.kind == "python"}
        self._slots = {s.name: asyncio.Semaphore(s.max_concurrency) for s in specs}
        self._http: httpx.AsyncClient | None = None

    def __bool__(self) -> bool:
        return bool(self.specs)

    async def execute(
        self, spec: ToolSpec, arguments: dict[str, Any], caller: Caller, idempotency: str
    ) -> Executed:
        """Run the tool once within its timeout (waiting for a free slot counts)."""
        try:
            async with asyncio.timeout(spec.timeout_s), self._slots[spec.name]:
                if spec.kind == "http":
                    return await self._http_call(spec, arguments, caller, idempotency)
                return await self._python_call(spec, arguments)
        except TimeoutError:
            return _failed("timeout", f"The tool did not answer within {spec.timeout_s:g} s.")
        except httpx.HTTPError as exc:
            log.warning("tool %s: %r", spec.name, exc)
            return _failed(
                "error", f"The tool service could not be reached ({type(exc).__name__})."
            )
        except Exception as exc:  # the tool's own failure: the model hears it, the session goes on
            log.exception("tool %s failed", spec.name)
            return _failed("error", f"The tool failed: {type(exc).__name__}: {exc}")

    async def _http_call(
        self, spec: ToolSpec, arguments: dict[str, Any], caller: Caller, idempotency: str
    ) -> Executed:
        body = json.dumps(
            {
                "tool": spec.name,
                "arguments": arguments,
                "caller": caller.wire(),
                "idempotency_key": idempotency,
            },
            separators=(",", ":"),
        ).encode()
        headers = {
            **self._headers[spec.name],
            "Content-Type": "application/json",
            "Idempotency-Key": idempotency,
            "X-Voxgate-Session-Id": caller.session_id,
            "X-Voxgate-Key-Id": caller.key_id or "",
            "X-Voxgate-Tenant": caller.tenant or "",
            "X-Voxgate-User": caller.user_hash or "",
        }
        if self.signing_secret:
            headers[HEADER] = signature(self.signing_secret, int(self.wall()), body)
        if self._http is None:
            self._http = httpx.AsyncClient(follow_redirects=False)
        assert spec.url is not None
        reply = await self._http.request(
            spec.method, spec.url, content=body, headers=headers, timeout=spec.timeout_s
        )
        text = reply.text
        if not reply.is_success:
            message = f"The tool service answered HTTP {reply.status_code}: {text[:300]}"
            return Executed("error", _error("tool_failed", message), reply.status_code)
        return Executed("ok", _cut(_as_output(text, reply.headers.get("content-type", ""))), 200)

    async def _python_call(self, spec: ToolSpec, arguments: dict[str, Any]) -> Executed:
        target = self._targets[spec.name]
        if inspect.iscoroutinefunction(target):
            result = await target(**arguments)
        else:
            result = await asyncio.to_thread(target, **arguments)
        return Executed("ok", _cut(result if isinstance(result, str) else json.dumps(result)))

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.aclose()


def _import(spec: ToolSpec) -> Callable[..., Any]:
    module_name, _, attr = (spec.target or "").partition(":")
    try:
        target = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ValueError(
            f"tool {spec.name!r}: cannot import target {spec.target!r}: {exc}"
        ) from None
    if not callable(target):
        raise ValueError(f"tool {spec.name!r}: target {spec.target!r} is not callable")
    return target  # type: ignore[no-any-return]


def _as_output(text: str, content_type: str) -> str:
    if "json" in content_type:
        return text
    return json.dumps({"result": text})


def _cut(output: str) -> str:
    if len(output) <= MAX_OUTPUT_CHARS:
        return output
    return output[:MAX_OUTPUT_CHARS] + f" … [cut: the tool answered {len(output)} characters]"


def _error(code: str, message: str) -> str:
    return json.dumps({"error": {"code": code, "message": message}})


def _failed(status: Status, message: str) -> Executed:
    code = "tool_timeout" if status == "timeout" else "tool_failed"
    return Executed(status, _error(code, message))
