"""Every HTTP error the server gives is OpenAI-shaped: the `openai` SDK raises its typed error
with the code and message from the body, never FastAPI's ``{"detail": …}``."""

from __future__ import annotations

from typing import Any

import httpx
import openai
import pytest
from fastapi import FastAPI, HTTPException
from fastapi.testclient import TestClient

from voxgate.server.app import create_app
from voxgate.settings import Settings

ERROR_KEYS = {"message", "type", "param", "code"}


def app_with_probes() -> FastAPI:
    # No lifespan runs here (no engines start): these errors are made before any route does
    # real work. Two probe routes reach the validation and crash paths, which no production
    # route can be made to hit on purpose.
    app = create_app(Settings())

    @app.get("/v1/probe/count")
    async def count(n: int) -> dict[str, int]:
        return {"n": n}

    @app.get("/v1/probe/crash")
    async def crash() -> None:
        raise RuntimeError("a bug")

    return app


def the_error(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}, body
    assert set(body["error"]) == ERROR_KEYS, body
    error: dict[str, Any] = body["error"]
    return error


def test_unknown_route_is_404_not_found() -> None:
    client = TestClient(app_with_probes())
    error = the_error(client.post("/v1/realtime/sessions", json={}), 404)
    assert error["code"] == "not_found"
    assert "POST /v1/realtime/sessions" in error["message"]
    assert "/v1/realtime/calls" in error["message"]  # says what is served instead


def test_wrong_method_is_405() -> None:
    client = TestClient(app_with_probes())
    response = client.get("/v1/realtime/calls")
    error = the_error(response, 405)
    assert error["code"] == "method_not_allowed"
    assert "GET" in error["message"]
    assert "POST" in response.headers["allow"]


def test_invalid_parameter_is_400_naming_it() -> None:
    client = TestClient(app_with_probes())
    error = the_error(client.get("/v1/probe/count", params={"n": "many"}), 400)
    assert (error["code"], error["param"]) == ("invalid_value", "n")
    error = the_error(client.get("/v1/probe/count"), 400)
    assert (error["code"], error["param"]) == ("missing_required_parameter", "n")
    assert error["message"] == "Missing required parameter: 'n'."


def test_a_crash_is_a_500_server_error() -> None:
    client = TestClient(app_with_probes(), raise_server_exceptions=False)
    error = the_error(client.get("/v1/probe/crash"), 500)
    assert (error["type"], error["code"]) == ("server_error", "server_error")
    assert "a bug" not in error["message"]  # internals stay in the log


async def test_the_sdk_raises_its_typed_errors_with_our_codes() -> None:
    transport = httpx.ASGITransport(app=app_with_probes())
    async with httpx.AsyncClient(transport=transport) as http:
        client = openai.AsyncOpenAI(
            base_url="http://voxgate/v1", api_key="sk-test", http_client=http, max_retries=0
        )
        with pytest.raises(openai.NotFoundError) as missing:
            await client.models.list()
        assert missing.value.code == "not_found"
        with pytest.raises(openai.BadRequestError) as bad:
            await client.get("/probe/count?n=x", cast_to=object)
        assert bad.value.param == "n"


def test_other_statuses_get_a_code_from_their_name() -> None:
    app = app_with_probes()

    @app.get("/v1/probe/busy")
    async def busy() -> None:
        raise HTTPException(429)

    error = the_error(TestClient(app).get("/v1/probe/busy"), 429)
    assert (error["code"], error["message"]) == ("too_many_requests", "Too Many Requests")
