"""The refusal every control raises: an OpenAI-shaped error with its HTTP status."""

from __future__ import annotations

from fastapi.responses import JSONResponse


class Refused(Exception):
    """A request the controls refuse: ``code`` says which rule (invalid_api_key,
    client_secret_used, concurrent_sessions_exceeded …), ``status`` the HTTP status."""

    def __init__(
        self,
        code: str,
        message: str,
        status: int,
        *,
        param: str | None = None,
        type_: str = "invalid_request_error",
        subject: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        # Ids of the credential refused (for the audit log; never the credential itself).
        self.subject = subject or {}
        self.code = code
        self.message = message
        self.status = status
        self.param = param
        self.type = type_

    def response(self, headers: dict[str, str] | None = None) -> JSONResponse:
        error = {"message": self.message, "type": self.type, "param": self.param, "code": self.code}
        return JSONResponse({"error": error}, status_code=self.status, headers=headers)


def unauthorized(code: str, message: str, **subject: str) -> Refused:
    return Refused(code, message, 401, subject=subject)


def forbidden(code: str, message: str, param: str | None = None, **subject: str) -> Refused:
    return Refused(code, message, 403, param=param, subject=subject)


def too_many(code: str, message: str) -> Refused:
    return Refused(code, message, 429, type_="rate_limit_error")
