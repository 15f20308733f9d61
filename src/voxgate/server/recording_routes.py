"""Admin REST for session recordings (``admin`` scope): ``GET
/v1/admin/sessions/{session_id}/recording`` serves the two-channel WAV (caller left, voxgate
right). Deleting the session (``DELETE /v1/admin/sessions/{session_id}``) deletes it too."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import FileResponse

from .admin import admin_principal
from .refusal import Refused
from .state import AppState

router = APIRouter()


@router.get("/v1/admin/sessions/{session_id}/recording")
async def get_recording(request: Request, session_id: str) -> Response:
    try:
        admin = await admin_principal(request)
        state: AppState = request.app.state.voxgate
        info = state.recordings.find(session_id, state.controls.clock())
        if info is None:
            raise Refused(
                "recording_not_found",
                f"No recording of session '{session_id}' on this server: the session was not "
                "recorded (policy record_calls), its recording expired with the transcript "
                "retention, it was deleted, or another replica served it.",
                404,
                param="session_id",
            )
        if not info.complete:
            raise Refused(
                "recording_in_progress",
                f"Session '{session_id}' is still being recorded; fetch the recording once "
                "the session has ended.",
                409,
                param="session_id",
            )
    except Refused as exc:
        return exc.response()
    state.controls.audit("recording_fetch", admin, session_id=session_id)
    return FileResponse(
        state.recordings.wav_path(session_id),
        media_type="audio/wav",
        filename=f"{session_id}.wav",
    )
