"""The ``voxgate`` command line."""

from __future__ import annotations

import asyncio
import logging
import sys
from enum import StrEnum
from pathlib import Path

import typer
import uvicorn

from . import __version__, cli_controls, cli_usage
from .call import DEFAULT_URL, DEFAULT_VOICE, CallOptions, CallUsageError, run_call
from .settings import SettingsError, load_settings

app = typer.Typer(
    help="voxgate: a self-hosted realtime voice-agent server speaking the OpenAI Realtime API.",
    no_args_is_help=True,
    add_completion=False,
)


@app.command()
def serve(
    host: str = typer.Option(None, help="Address to listen on [default: 127.0.0.1]."),
    port: int = typer.Option(None, help="Port to listen on [default: 8000]."),
    config: Path = typer.Option(None, help="TOML config file (also VOXGATE_CONFIG)."),
) -> None:
    """Start the server (embedded engines unless an LLM endpoint is configured)."""
    try:
        settings = load_settings(config, check_exposure=False, host=host, port=port)
        cli_controls.check_exposure(settings)
    except (SettingsError, ValueError) as exc:
        typer.echo(f"voxgate: {exc}", err=True)
        raise typer.Exit(2) from None
    from .engines.errors import EngineUnavailable
    from .server.app import create_app
    from .server.engines import check_engine_settings
    from .server.http_limits import uvicorn_options

    try:  # a bad model path is reported plainly here, not inside uvicorn's start-up traceback
        check_engine_settings(settings)
    except EngineUnavailable as exc:
        typer.echo(f"voxgate: {exc}", err=True)
        raise typer.Exit(2) from None
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        **uvicorn_options(settings.http_header_timeout_s),
        ws_max_size=int(settings.max_message_mb * 1024 * 1024),
        log_level=settings.log_level.lower(),
        timeout_graceful_shutdown=int(settings.shutdown_timeout_s) or None,
    )


class TurnDetectionMode(StrEnum):
    server_vad = "server_vad"
    semantic_vad = "semantic_vad"
    none = "none"


@app.command()
def call(
    wav: Path | None = typer.Argument(
        None, help="WAV file to play as your voice (16-bit PCM, any rate, mono or stereo)."
    ),
    text: str | None = typer.Option(
        None, help="Say this with the embedded espeak-ng voice instead."
    ),
    voice: str = typer.Option(
        DEFAULT_VOICE, help="Voice for --text: an OpenAI voice name or an espeak-ng voice."
    ),
    url: str = typer.Option(DEFAULT_URL, help="The server's Realtime WebSocket URL."),
    api_key: str | None = typer.Option(
        None,
        envvar=["VOXGATE_API_KEY", "OPENAI_API_KEY"],
        help="Bearer key, for a server that requires one.",
        show_default=False,
    ),
    model: str | None = typer.Option(None, help="Model to ask for (default: the server's)."),
    out: Path = typer.Option(Path("reply.wav"), help="Where to save the reply audio."),
    turn_detection: TurnDetectionMode = typer.Option(
        TurnDetectionMode.server_vad,
        help="Who ends your turn: the server's VAD, or (none) this command, after the audio.",
    ),
    timeout: float = typer.Option(
        30.0, help="Give up when the server sends nothing for this many seconds."
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Print only what is said."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Print every event too."),
) -> None:
    """Speak a WAV file or --text into a running server in real time, print what happens,
    and save the spoken reply."""
    try:
        if quiet and verbose:
            raise CallUsageError("choose one of --quiet and --verbose")
        options = CallOptions(
            wav=wav,
            text=text,
            voice=voice,
            url=url,
            api_key=api_key,
            model=model,
            out=out,
            turn_detection=turn_detection.value,
            timeout_s=timeout,
            verbosity="quiet" if quiet else "verbose" if verbose else "normal",
        )
    except CallUsageError as exc:
        typer.echo(f"voxgate call: {exc} (see voxgate call --help)", err=True)
        raise typer.Exit(2) from None
    try:
        result = asyncio.run(run_call(options, sys.stdout))
    except KeyboardInterrupt:
        typer.echo("voxgate call: interrupted", err=True)
        raise typer.Exit(130) from None
    if result.error is not None:
        typer.echo(f"voxgate call: {result.error}", err=True)
    raise typer.Exit(result.exit_code)


@app.command()
def version() -> None:
    """Print the version."""
    typer.echo(__version__)


cli_controls.register(app)
app.command("usage")(cli_usage.usage)


def main() -> None:
    app()
