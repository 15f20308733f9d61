"""What an HTTP request says about its caller."""

from __future__ import annotations

from fastapi import Request

from ..transports.websocket import bearer_credential


def identity(request: Request) -> tuple[str | None, str | None]:
    """The bearer credential and the end user's safety identifier of a request."""
    credential = bearer_credential(request.headers.get("authorization", ""))
    return credential, request.headers.get("openai-safety-identifier")
