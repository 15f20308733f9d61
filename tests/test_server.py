"""The server as a user runs it: the CLI, health, settings, authentication, session limits."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import websockets

from conftest import free_port, validated
from voxgate.settings import SettingsError, load_settings

VOXGATE = str(Path(sys.executable).with_name("voxgate"))


def test_help_lists_commands() -> None:
    out = subprocess.run([VOXGATE, "--help"], capture_output=True, text=True, check=True).stdout
    assert "serve" in out and "version" in out


def test_serve_starts_answers_health_and_stops_cleanly(tmp_path: Path) -> None:
    port = free_port()
    env = {**os.environ, "VOXGATE_DATA_DIR": str(tmp_path / "data")}
    proc = subprocess.Popen(
        [VOXGATE, "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        body = _wait_for_health(port)
        assert body["status"] == "ok"
        assert (tmp_path / "data").is_dir()
    finally:
        proc.send_signal(signal.SIGINT)
        output, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, output
    assert "development mode" in output
    assert "built-in responder" in output


def _wait_for_health(port: int) -> Any:
    deadline = time.monotonic() + 30
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as r:
                assert r.status == 200
                return json.load(r)
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def test_dev_mode_refuses_non_loopback() -> None:
    with pytest.raises(SettingsError, match="VOXGATE_API_KEYS"):
        load_settings(host="0.0.0.0")
    assert load_settings(host="0.0.0.0", api_keys="k1,k2").api_keys == ["k1", "k2"]


def test_ice_servers_come_from_the_environment_with_turn_credentials(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(
        "VOXGATE_ICE_SERVERS", "stun:stun.example.org:3478, turn:ann:s3cret@turn.example.org:3478"
    )
    assert load_settings().ice_server_configs == [
        {"urls": "stun:stun.example.org:3478"},
        {"urls": "turn:turn.example.org:3478", "username": "ann", "credential": "s3cret"},
    ]
    monkeypatch.setenv("VOXGATE_ICE_SERVERS", "http://stun.example.org")
    with pytest.raises(ValueError, match="must start with stun:"):
        load_settings()


def test_config_file_and_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "voxgate.toml"
    config.write_text('port = 9123\nllm_model = "llama"\nmax_session_minutes = 5\n')
    monkeypatch.setenv("VOXGATE_MAX_SESSION_MINUTES", "7")
    monkeypatch.delenv("VOXGATE_CONFIG", raising=False)
    settings = load_settings(config)
    assert (settings.port, settings.llm_model) == (9123, "llama")
    assert settings.max_session_minutes == 7  # the environment wins over the file
    with pytest.raises(SettingsError, match="does not exist"):
        load_settings(tmp_path / "missing.toml")


def test_serve_reports_bad_settings(tmp_path: Path) -> None:
    result = subprocess.run(
        [VOXGATE, "serve", "--host", "0.0.0.0", "--port", str(free_port())],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, "VOXGATE_API_KEYS": ""},
    )
    assert result.returncode == 2
    assert "VOXGATE_API_KEYS" in result.stderr


async def test_api_keys_are_enforced(start_server: Any) -> None:
    server = start_server(api_keys=["sk-good"])
    url = server.ws_url + "?model=gpt-realtime"
    async with websockets.connect(url, additional_headers={"Authorization": "Bearer sk-bad"}) as ws:
        error = validated(await ws.recv())
        assert (error.type, error.error.code) == ("error", "invalid_api_key")
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await ws.recv()
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008
    async with websockets.connect(
        url, additional_headers={"Authorization": "Bearer sk-good"}
    ) as ws:
        assert validated(await ws.recv()).type == "session.created"
    # Browsers pass the key as a subprotocol and need "realtime" echoed back.
    protocols = ["realtime", "openai-insecure-api-key.sk-good"]
    async with websockets.connect(url, subprotocols=protocols) as ws:  # type: ignore[arg-type]
        assert ws.subprotocol == "realtime"
        assert validated(await ws.recv()).type == "session.created"


async def test_idle_timeout_ends_session_with_reason(start_server: Any) -> None:
    server = start_server(idle_timeout_s=0.5)
    async with websockets.connect(server.ws_url + "?model=gpt-realtime") as ws:
        assert validated(await ws.recv()).type == "session.created"
        error = validated(await ws.recv())
        assert error.error.code == "idle_timeout"
        assert "0.5 seconds" in error.error.message
        with pytest.raises(websockets.ConnectionClosedOK):
            await ws.recv()


async def test_max_duration_ends_session_with_reason(start_server: Any) -> None:
    server = start_server(max_session_minutes=0.01)  # 0.6 s
    async with websockets.connect(server.ws_url + "?model=gpt-realtime") as ws:
        created = validated(await ws.recv())
        assert created.session.expires_at >= int(time.time())
        error = validated(await ws.recv())
        assert error.error.code == "session_duration_exceeded"
        assert "maximum duration" in error.error.message
        with pytest.raises(websockets.ConnectionClosedOK):
            await ws.recv()


async def test_sideband_and_beta_get_clear_errors(start_server: Any) -> None:
    server = start_server()
    async with websockets.connect(server.ws_url + "?call_id=rtc_123") as ws:
        error = validated(await ws.recv())
        assert error.error.code == "call_not_found"
        assert "rtc_123" in error.error.message and "call_id" in error.error.message
    async with websockets.connect(server.ws_url + "?call_id=rtc_1&model=m") as ws:
        error = validated(await ws.recv())
        assert "not both" in error.error.message
    beta = {"OpenAI-Beta": "realtime=v1"}
    async with websockets.connect(server.ws_url + "?model=m", additional_headers=beta) as ws:
        error = validated(await ws.recv())
        assert error.error.code == "beta_api_shape_disabled"
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await ws.recv()
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 4000


async def test_session_limit_refuses_with_reason(start_server: Any) -> None:
    server = start_server(max_sessions=1)
    url = server.ws_url + "?model=gpt-realtime"
    async with websockets.connect(url) as first:
        assert validated(await first.recv()).type == "session.created"
        async with websockets.connect(url) as second:
            error = validated(await second.recv())
            assert error.error.code == "session_limit_reached"
