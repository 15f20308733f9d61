"""Recording and the spoken disclosure, applied to each admitted session per its policy
(docs/telephony.md): ``disclosure`` (spoken first; phone calls have a default sentence) and
``record_calls`` (a two-channel WAV under the transcripts' retention). Both are audited.
Also the audio formats a phone call's session starts with."""

from __future__ import annotations

import copy
from typing import Any

from ..control.identity import Principal
from ..session.disclosure import disclosure_for
from ..session.recording import CallRecorder
from ..session.session import Session
from ..storage.recordings import RecordingInfo
from .state import AppState

DAY_S = 86400.0
# Sessions with no server playout record at the rate of the Realtime API's PCM16.
DEFAULT_RATE = 24000


def phone_session(audio_type: str, patch: dict[str, Any]) -> dict[str, Any]:
    """A phone call's session patch: the line's G.711 (``audio/pcmu`` or ``audio/pcma``) in
    and out unless ``patch`` says otherwise, so the caller's audio reaches the listener and
    the reply reaches the line without a detour through 24 kHz PCM16."""
    line = {"format": {"type": audio_type}}
    return merged({"type": "realtime", "audio": {"input": line, "output": line}}, patch)


def merged(base: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """``patch`` over ``base``, nested objects merged key by key."""
    out = copy.deepcopy(base)
    for key, value in patch.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merged(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def apply_media_policy(state: AppState, session: Session, principal: Principal, kind: str) -> None:
    policy, controls = principal.policy, state.controls
    text = disclosure_for(policy.disclosure, kind)
    if text is not None:
        # Direct mode plays no audio of voxgate's: the audit says it was not spoken.
        code = None if session.disclose(text) else "not_spoken"
        controls.audit(
            "disclosure", principal, code=code, session_id=session.id, transport=kind, text=text
        )
    if not policy.record_calls:
        return
    days = policy.transcript_retention_days
    if days == 0:  # transcripts are not kept: neither is the recording
        controls.audit(
            "recording", principal, code="retention_zero", session_id=session.id, transport=kind
        )
        return
    now = controls.clock()
    rate = session.playout.format.rate if session.playout is not None else DEFAULT_RATE
    info = RecordingInfo(
        session_id=session.id,
        rate=rate,
        started_at=now,
        expires_at=None if days is None else now + days * DAY_S,
        key_id=principal.key_id,
        user_hash=principal.user_hash,
    )
    session.record(CallRecorder(state.recordings.start(info), session.clock, rate))
    controls.audit(
        "recording",
        principal,
        session_id=session.id,
        transport=kind,
        rate=rate,
        expires_at=info.expires_at,
    )
