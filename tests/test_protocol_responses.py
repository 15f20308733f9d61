"""Response lifecycle: creation, engine progress, cancellation, out-of-band responses,
per-response overrides (PROTOCOL.md §8.1, §10, §11.6, §11.7, §18 item 9)."""

from __future__ import annotations

from typing import Any

from _helpers_protocol import (
    add_user_text,
    effects,
    events,
    item_ids,
    plan_of,
    send,
    start_response,
    started,
    the_error,
    types,
    update,
)
from voxgate.protocol.commands import CancelResponse

MS = 48


def dones(evs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e["response"] for e in evs if e["type"] == "response.done"]


def test_created_response_is_in_progress_with_no_output() -> None:
    conn = started()
    out = send(conn, "response.create")
    [created] = events(out)
    response = created["response"]
    assert (response["status"], response["output"], response["usage"]) == ("in_progress", [], None)
    assert response["conversation_id"] == conn.conversation.id
    assert plan_of(out).response_id == response["id"]


def test_finished_response_reports_output_and_usage() -> None:
    conn = started()
    add_user_text(conn, "What is two plus two?", "item_u")
    rid = start_response(conn, output_modalities=["text"]).response_id
    conn.response_text(rid, "Four.")
    [done] = dones(events(conn.finish_response(rid)))
    assert done["status"] == "completed" and done["status_details"] is None
    assert done["output"][0]["content"] == [{"type": "output_text", "text": "Four."}]
    assert done["output"][0]["status"] == "completed"
    assert done["usage"]["output_tokens"] == 1
    assert done["usage"]["input_tokens"] > 0


def test_cancel_mid_message_flushes_open_parts_then_one_done() -> None:
    conn = started()
    rid = start_response(conn).response_id
    conn.response_text(rid, "Hello")
    conn.response_audio(rid, bytes(100 * MS))
    out = send(conn, "response.cancel", event_id="x1")
    assert types(events(out)) == [
        "response.output_audio.done",
        "response.output_audio_transcript.done",
        "response.content_part.done",
        "response.output_item.done",
        "conversation.item.done",
        "response.done",
    ]
    evs = events(out)
    assert evs[1]["transcript"] == "Hello"
    assert evs[3]["item"]["status"] == "incomplete"
    [done] = dones(evs)
    assert done["status"] == "cancelled"
    assert done["status_details"] == {"type": "cancelled", "reason": "client_cancelled"}
    assert done["output"][0]["status"] == "incomplete"
    assert effects(out) == [CancelResponse(rid)]
    # The partial answer stays in the conversation: it was heard.
    assert list(conn.conversation)[-1].status == "incomplete"


def test_cancel_before_any_output_still_sends_done() -> None:
    conn = started()
    rid = start_response(conn).response_id
    out = events(send(conn, "response.cancel"))
    assert types(out) == ["response.done"]
    assert out[0]["response"]["id"] == rid


def test_engine_progress_after_cancel_is_dropped() -> None:
    conn = started()
    rid = start_response(conn).response_id
    conn.response_text(rid, "Hel")
    send(conn, "response.cancel")
    assert conn.response_text(rid, "lo") == []
    assert conn.response_audio(rid, bytes(10 * MS)) == []
    assert conn.response_message_done(rid) == []
    assert conn.response_call(rid, "item_f", "call_1", "f") == []
    assert conn.finish_response(rid) == []  # no second response.done
    assert conn.cancel_response(rid, "client_cancelled") == []


def test_every_ending_produces_exactly_one_done() -> None:
    conn = started()
    for status in ("completed", "incomplete", "failed"):
        rid = start_response(conn).response_id
        conn.response_text(rid, "x")
        first = events(conn.finish_response(rid, status))  # type: ignore[arg-type]
        assert [d["status"] for d in dones(first)] == [status]
        assert conn.finish_response(rid) == []
        assert events(send(conn, "response.cancel", response_id=rid))[0]["type"] == "error"


def test_second_response_create_while_one_is_active_is_refused() -> None:
    conn = started()
    rid = start_response(conn).response_id
    out = send(conn, "response.create", event_id="agents_py_response_create_2")
    error = the_error(out)
    assert error["code"] == "conversation_already_has_active_response"
    assert error["event_id"] == "agents_py_response_create_2"
    assert rid in error["message"]
    assert list(conn.responses) == [rid]
    conn.finish_response(rid)
    start_response(conn)  # free again once the first has ended


def test_cancel_with_no_active_response_is_an_error_echoing_the_event_id() -> None:
    conn = started()
    error = the_error(send(conn, "response.cancel", event_id="cancel_1"))
    assert error == {
        "type": "invalid_request_error",
        "code": "response_cancel_not_active",
        "message": "Cancellation failed: no active response found.",
        "param": None,
        "event_id": "cancel_1",
    }


def test_cancel_by_id_of_an_ended_response_is_an_error() -> None:
    conn = started()
    rid = start_response(conn).response_id
    conn.finish_response(rid)
    error = the_error(send(conn, "response.cancel", response_id=rid))
    assert (error["code"], error["param"]) == ("response_cancel_not_active", "response_id")


# -- out of band ------------------------------------------------------------------------------


def test_out_of_band_response_stays_out_of_the_conversation() -> None:
    conn = started()
    add_user_text(conn, "hi", "item_u")
    out = send(
        conn,
        "response.create",
        response={
            "conversation": "none",
            "metadata": {"topic": "summary"},
            "output_modalities": ["text"],
        },
    )
    [created] = events(out)
    rid = plan_of(out).response_id
    assert created["response"]["conversation_id"] is None
    assert created["response"]["metadata"] == {"topic": "summary"}
    evs = events(conn.response_text(rid, "A greeting.")) + events(conn.finish_response(rid))
    assert not [e for e in evs if e["type"].startswith("conversation.item.")]
    assert types(evs) == [
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.done",
    ]
    [done] = dones(evs)
    assert (done["conversation_id"], done["metadata"]) == (None, {"topic": "summary"})
    assert item_ids(conn) == ["item_u"]


def test_out_of_band_response_may_run_beside_a_default_one() -> None:
    conn = started()
    default = start_response(conn).response_id
    oob = start_response(conn, conversation="none", metadata={"k": "v"}).response_id
    another = start_response(conn, conversation="none").response_id
    assert conn.active_response_id == default
    assert set(conn.responses) == {default, oob, another}
    # Cancelling without an id targets the default-conversation response only.
    out = events(send(conn, "response.cancel"))
    assert [d["id"] for d in dones(out)] == [default]
    assert set(conn.responses) == {oob, another}


def test_response_input_resolves_item_references() -> None:
    conn = started()
    add_user_text(conn, "first", "item_a")
    add_user_text(conn, "second", "item_b")
    plan = start_response(
        conn,
        conversation="none",
        input=[
            {"type": "item_reference", "id": "item_b"},
            {
                "type": "message",
                "role": "user",
                "content": [{"type": "input_text", "text": "Summarise."}],
            },
        ],
    )
    assert [i.id for i in plan.context][0] == "item_b"
    assert len(plan.context) == 2
    assert item_ids(conn) == ["item_a", "item_b"]  # inline input items are not added


def test_response_input_empty_means_no_context() -> None:
    conn = started()
    add_user_text(conn, "first", "item_a")
    assert start_response(conn, conversation="none", input=[]).context == []
    assert [i.id for i in start_response(conn).context] == ["item_a"]


def test_response_input_with_unknown_reference_is_an_error_and_starts_nothing() -> None:
    conn = started()
    out = send(
        conn,
        "response.create",
        response={"input": [{"type": "item_reference", "id": "item_gone"}]},
        event_id="rc1",
    )
    error = the_error(out)
    assert (error["param"], error["event_id"]) == ("response.input[0].id", "rc1")
    assert conn.responses == {} and conn.active_response_id is None


def test_per_response_overrides_reach_the_plan() -> None:
    conn = started()
    update(conn, instructions="Session instructions.")
    plan = start_response(
        conn,
        instructions="Answer in French.",
        output_modalities=["text"],
        audio={"output": {"voice": "coral", "format": {"type": "audio/pcmu"}}},
        max_output_tokens=50,
        tools=[{"type": "function", "name": "lookup", "parameters": {"type": "object"}}],
        tool_choice="required",
    )
    assert plan.instructions == "Answer in French."
    assert plan.output_modalities == ["text"] and not plan.audio
    assert (plan.voice, plan.output_format) == ("coral", "audio/pcmu")
    assert plan.max_output_tokens == 50
    assert [t["name"] for t in plan.tools] == ["lookup"]
    assert plan.tool_choice == "required"
    # The session itself is unchanged.
    assert conn.config.instructions == "Session instructions."


def test_without_overrides_the_plan_follows_the_session() -> None:
    conn = started()
    update(
        conn,
        instructions="Be brief.",
        output_modalities=["text"],
        audio={"output": {"voice": "ash"}},
    )
    plan = start_response(conn)
    assert (plan.instructions, plan.output_modalities, plan.voice) == ("Be brief.", ["text"], "ash")
    assert plan.max_output_tokens is None


def test_voice_override_after_assistant_audio_is_refused() -> None:
    conn = started()
    rid = start_response(conn).response_id
    conn.response_audio(rid, bytes(10 * MS))
    conn.finish_response(rid)
    error = the_error(
        send(conn, "response.create", response={"audio": {"output": {"voice": "echo"}}})
    )
    assert error["code"] == "cannot_update_voice"
    assert conn.responses == {}


def test_invalid_response_params_are_refused_without_response_created() -> None:
    conn = started()
    error = the_error(send(conn, "response.create", response={"temperature": 0.8}, event_id="rc2"))
    assert (error["code"], error["param"], error["event_id"]) == (
        "unknown_parameter",
        "response.temperature",
        "rc2",
    )
    error = the_error(send(conn, "response.create", response={"conversation": "conv_other"}))
    assert error["param"] == "response.conversation"
    assert conn.responses == {}
