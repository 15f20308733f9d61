"""Recording and the spoken disclosure, applied to each admitted session per its policy
(docs/telephony.md): ``disclosure`` (spoken first; phone calls have a default sentence) and
``record_calls`` (a two-channel WAV under the transcripts' retention). Both are audited."""

from __future__ import annotations

from ..control.identity import Principal
from ..session.disclosure import disclosure_for
from ..session.recording import CallRecorder
from ..session.session import Session
from ..storage.recordings import RecordingInfo
from .state import AppState

DAY_S = 86400.0
# Sessions with no server playout record at the rate of the Realtime API's PCM16.
DEFAULT_RATE = 24000


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
