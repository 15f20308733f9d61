"""Admin REST for the ledger (``admin`` scope): usage reports (JSON or CSV), sessions with
their usage and transcript, and deletion of a session or of everything about one end user."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime
from typing import Any, cast

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from ..control.identity import Principal, hash_user
from ..storage.ledger_queries import GROUPS, GroupBy
from .admin import admin_principal
from .ledger import Ledger
from .refusal import Refused
from .state import AppState

router = APIRouter()
FORMATS = ("json", "csv")
MAX_SESSIONS = 1000


def bad_request(message: str, param: str, code: str = "invalid_value") -> Refused:
    return Refused(code, message, 400, param=param)


def parse_time(value: str | None, param: str) -> float | None:
    """Unix seconds, or an ISO 8601 date or date-time (UTC unless it says otherwise)."""
    if value is None or value == "":
        return None
    try:
        return float(value)
    except ValueError:
        pass
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise bad_request(
            f"'{value}' is not a time: give Unix seconds or an ISO 8601 date "
            "(2026-11-01) or date-time (2026-11-01T08:00:00Z).",
            param,
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


def check_group(group_by: str) -> GroupBy:
    if group_by not in GROUPS:
        raise bad_request(
            f"group_by must be one of {', '.join(GROUPS)}; got '{group_by}'.", "group_by"
        )
    return cast(GroupBy, group_by)


def to_csv(rows: list[dict[str, Any]]) -> str:
    out = io.StringIO()
    if rows:
        writer = csv.DictWriter(out, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    return out.getvalue()


async def _admin(request: Request) -> tuple[AppState, Ledger, Principal]:
    principal = await admin_principal(request)
    state: AppState = request.app.state.voxgate
    if state.ledger is None:
        raise Refused("ledger_unavailable", "This server keeps no ledger.", 503)
    return state, state.ledger, principal


def _not_found(session_id: str) -> Refused:
    return Refused(
        "session_not_found", f"No session '{session_id}' in the ledger.", 404, param="session_id"
    )


@router.get("/v1/admin/usage")
async def usage_report(
    request: Request,
    start_time: str | None = None,
    end_time: str | None = None,
    group_by: str = "day",
    format: str = "json",
) -> Response:
    try:
        _, ledger, _ = await _admin(request)
        group = check_group(group_by)
        if format not in FORMATS:
            raise bad_request(f"format must be json or csv; got '{format}'.", "format")
        start, end = parse_time(start_time, "start_time"), parse_time(end_time, "end_time")
        rows = await ledger.queries.usage_report(group, start, end)
    except Refused as exc:
        return exc.response()
    if format == "csv":
        return Response(to_csv(rows), media_type="text/csv; charset=utf-8")
    body = {"object": "list", "group_by": group, "start_time": start, "end_time": end, "data": rows}
    return JSONResponse(body)


@router.get("/v1/admin/sessions")
async def list_sessions(
    request: Request,
    key: str | None = None,
    user: str | None = None,
    tenant: str | None = None,
    start_time: str | None = None,
    end_time: str | None = None,
    limit: int = 100,
) -> Response:
    try:
        _, ledger, _ = await _admin(request)
        if not 1 <= limit <= MAX_SESSIONS:
            raise bad_request(f"limit must be between 1 and {MAX_SESSIONS}.", "limit")
        rows = await ledger.queries.list_sessions(
            key_id=key,
            user_hash=hash_user(user) if user else None,
            tenant=tenant,
            start_time=parse_time(start_time, "start_time"),
            end_time=parse_time(end_time, "end_time"),
            limit=limit,
        )
    except Refused as exc:
        return exc.response()
    return JSONResponse({"object": "list", "data": rows})


@router.get("/v1/admin/sessions/{session_id}")
async def get_session(request: Request, session_id: str) -> Response:
    try:
        _, ledger, _ = await _admin(request)
        found = await ledger.queries.session(session_id)
        if found is None:
            raise _not_found(session_id)
    except Refused as exc:
        return exc.response()
    return JSONResponse(found)


@router.delete("/v1/admin/sessions/{session_id}")
async def delete_session(request: Request, session_id: str) -> Response:
    try:
        state, ledger, admin = await _admin(request)
        recording = state.recordings.delete(session_id)
        if not await ledger.repo.delete_session(session_id) and not recording:
            raise _not_found(session_id)
    except Refused as exc:
        return exc.response()
    state.controls.audit("session_delete", admin, session_id=session_id)
    if recording:
        state.controls.audit("recording_delete", admin, session_id=session_id)
    return JSONResponse({"id": session_id, "object": "realtime.session.record", "deleted": True})


@router.delete("/v1/admin/users/{safety_identifier}")
async def delete_user(request: Request, safety_identifier: str) -> Response:
    try:
        state, ledger, admin = await _admin(request)
        user_hash = hash_user(safety_identifier)
        counts = await ledger.repo.delete_user(user_hash)
        counts["recordings"] = state.recordings.delete_user(user_hash)
    except Refused as exc:
        return exc.response()
    # The record names what was deleted, not whom: the user is gone from the store.
    state.controls.audit("user_delete", admin, deleted=counts)
    return JSONResponse({"object": "user.deleted", "user_hash": user_hash, "deleted": counts})
