"""OpenAI's Live API models (``gpt-live-*``) speak another protocol (``/v1/live/sessions``):
asked for on ``/v1/realtime`` they get the hosted API's ``invalid_model`` error, here as there,
rather than a session that half works."""

from __future__ import annotations

from fnmatch import fnmatchcase

from .errors import ProtocolError

LIVE_MODELS = "gpt-live*"


def live_model_error(model: str, param: str = "model") -> ProtocolError | None:
    """The error for a Live API model (None for any other model)."""
    if not fnmatchcase(model, LIVE_MODELS):
        return None
    return ProtocolError(
        f"The model '{model}' is not supported on /v1/realtime: it is a Live API model "
        "(/v1/live/sessions). Use a Realtime model, such as gpt-realtime.",
        code="invalid_model",
        param=param,
    )
