"""Server tools, without I/O: the operator's tool declarations, who may use them, argument
validation, the confirmation of actions that change things, the spoken-yes classifier, the
signature on HTTP tool calls and idempotency keys. The session layer executes them
(`voxgate.session.tools`)."""

from .confirm import Confirmations, PendingAction, is_clear_yes
from .guards import Refusal, may_use, parse_arguments, redacted
from .signing import idempotency_key, signature, verify
from .spec import CONFIRM_EXPIRY_S, Audience, ToolSpec

__all__ = [
    "CONFIRM_EXPIRY_S",
    "Audience",
    "Confirmations",
    "PendingAction",
    "Refusal",
    "ToolSpec",
    "idempotency_key",
    "is_clear_yes",
    "may_use",
    "parse_arguments",
    "redacted",
    "signature",
    "verify",
]
