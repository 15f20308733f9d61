"""One validated settings tree: ``VOXGATE_*`` environment variables over an optional TOML
config file (``VOXGATE_CONFIG`` or ``--config``), over the defaults below.

Only `server` and `cli` read settings; everything else receives plain values.
"""

from __future__ import annotations

import ipaddress
import os
import re
from contextvars import ContextVar
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from .control.policy import Policy
from .control.tools import ToolSpec
from .control.tools.spec import check_unique
from .control.usage import Price
from .protocol.mcp import (
    DEFAULT_MAX_CALLS_PER_SESSION,
    DEFAULT_MAX_CONCURRENT,
    DEFAULT_TIMEOUT_S,
    ApprovalFilter,
)


def _default_data_dir() -> Path:
    return Path(os.environ.get("XDG_DATA_HOME", Path.home() / ".local" / "share")) / "voxgate"


# The config file load_settings was given (over VOXGATE_CONFIG), while it builds Settings.
_config_file: ContextVar[str | None] = ContextVar("voxgate_config_file", default=None)


class PromptSetting(BaseModel):
    """A stored prompt: ``[prompts."pmpt_…"]`` with ``instructions`` (``{{variable}}``
    placeholders allowed) and ``version``."""

    model_config = ConfigDict(extra="forbid")
    instructions: str
    version: str = "1"


# --- Upstream Realtime services (docs/relay.md) ---
_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def expand_env(value: str, where: str) -> str:
    """``${NAME}`` replaced by the environment variable NAME; one that is unset is refused
    (an upstream key that silently became empty would fail far from here)."""

    def lookup(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in os.environ:
            raise ValueError(f"{where} refers to ${{{name}}}, but {name} is not set")
        return os.environ[name]

    return _ENV_REF.sub(lookup, value)


class UpstreamSetting(BaseModel):
    """One ``[[upstreams]]`` entry: sessions whose model matches one of ``models``
    (shell-style globs, first upstream that matches) are relayed to ``url``."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=64)
    url: str
    api_key: str = Field("", repr=False)
    models: list[str] = Field(default_factory=lambda: ["*"], min_length=1)
    max_session_seconds: float = Field(3600.0, gt=0)
    direct: bool = False
    stall_timeout_s: float = Field(15.0, gt=0)
    headers: dict[str, str] = Field(default_factory=dict, repr=False)

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        if not value.startswith(("ws://", "wss://")):
            raise ValueError(f"upstream url {value!r} must start with ws:// or wss://")
        return value

    @field_validator("api_key")
    @classmethod
    def _expand_key(cls, value: str) -> str:
        return expand_env(value, "upstream api_key")

    @field_validator("headers")
    @classmethod
    def _expand_headers(cls, value: dict[str, str]) -> dict[str, str]:
        return {k: expand_env(v, f"upstream header {k}") for k, v in value.items()}


# -- Twilio Media Streams ([twilio]) ----------------------------------------------------


class TwilioSetting(BaseModel):
    """``[twilio]``: calls that Twilio connects with ``<Connect><Stream>`` (docs/telephony.md).
    ``auth_token`` (or ``VOXGATE_TWILIO_AUTH_TOKEN``) turns the routes on."""

    model_config = ConfigDict(extra="forbid")
    # The account's auth token: it checks X-Twilio-Signature and keys the media tokens.
    auth_token: str | None = None
    # The API key whose policy governs Twilio calls (usually "${ENV_VAR}"); unset: development
    # mode only (no keys configured).
    key: str | None = None
    # The public base URL Twilio reaches this server at ("https://voice.example.com"), as
    # Twilio signs it; unset: rebuilt from the request and its X-Forwarded-* headers.
    public_url: str | None = None
    # The session configuration of every Twilio call (the shape of session.update's session).
    session: dict[str, Any] = Field(default_factory=dict)
    # How long the media stream has to connect after the webhook answered.
    media_token_ttl_s: float = Field(60.0, gt=0)

    @field_validator("auth_token", "key", mode="after")
    @classmethod
    def _expand(cls, value: str | None, info: Any) -> str | None:
        if value is None:
            return None
        return expand_env(value, f"[twilio] {info.field_name}") or None

    @field_validator("public_url")
    @classmethod
    def _check_public_url(cls, value: str | None) -> str | None:
        if value and not value.startswith(("http://", "https://")):
            raise ValueError(f"[twilio] public_url {value!r} must start with https:// or http://")
        return value.rstrip("/") if value else None


# -- MCP servers for every session ([[mcp_servers]]) -----------------------------------------


class McpServerSetting(BaseModel):
    """An MCP server (streamable HTTP) every session may use: ``[[mcp_servers]]``."""

    model_config = ConfigDict(extra="forbid")
    # Not "voxgate": that label marks approval requests for the server's own [[tools]].
    server_label: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")
    server_url: str = Field(pattern=r"^https?://")
    # Values may hold ${ENV} references, expanded at start-up; never shown to clients.
    headers: dict[str, str] = Field(default_factory=dict)
    # Tool names offered (None: all); "always", "never" or {"never": {"tool_names": [...]}}.
    allowed_tools: list[str] | None = None
    require_approval: Literal["always", "never"] | ApprovalFilter = "always"
    # Each call's time; calls run in one session, and at once in it (beyond: refused).
    timeout_s: float = Field(DEFAULT_TIMEOUT_S, gt=0)
    max_calls_per_session: int = Field(DEFAULT_MAX_CALLS_PER_SESSION, ge=1)
    max_concurrent: int = Field(DEFAULT_MAX_CONCURRENT, ge=1)
    # Argument names redacted in the audit log.
    sensitive_args: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _expand(self) -> McpServerSetting:
        if self.server_label == "voxgate":
            raise ValueError("mcp_servers: the server_label 'voxgate' is reserved")
        where = f"mcp_servers '{self.server_label}' headers"
        self.headers = {k: expand_env(v, f"{where}.{k}") for k, v in self.headers.items()}
        return self


# -- SIP (docs/telephony.md) ---------------------------------------------------------------


class SipTrunk(BaseModel):
    """A SIP trunk: where its calls may come from, how they authenticate, where outbound calls
    go, and the API key whose policy governs its calls."""

    model_config = ConfigDict(extra="forbid")
    name: str
    allowed_sources: list[str] = Field(default_factory=list)  # CIDR blocks
    username: str | None = None  # digest credentials callers must answer a 401 with
    password: str | None = None
    outbound_uri: str | None = None  # "sip:host:port" for outbound calls
    key: str | None = None  # usually "${ENV_VAR}"

    @field_validator("allowed_sources")
    @classmethod
    def _check_cidrs(cls, value: list[str]) -> list[str]:
        for cidr in value:
            ipaddress.ip_network(cidr, strict=False)  # raises ValueError naming the bad one
        return value

    @field_validator("key", "password", mode="before")
    @classmethod
    def _expand(cls, value: Any) -> Any:
        return expand_env(value, "a [sip] setting") if isinstance(value, str) else value

    @field_validator("outbound_uri")
    @classmethod
    def _check_uri(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith("sip:"):
            raise ValueError(f"outbound_uri {value!r} must start with sip:")
        return value

    @model_validator(mode="after")
    def _credentials_pair(self) -> SipTrunk:
        if (self.username is None) != (self.password is None):
            raise ValueError(f"trunk {self.name!r}: set both username and password, or neither")
        return self


class SipRoute(BaseModel):
    """Calls to ``number``: a session with ``session`` (the shape of session.update), or the
    ``webhook`` flow where an operator's service accepts them."""

    model_config = ConfigDict(extra="forbid")
    number: str
    session: dict[str, Any] | None = None
    webhook: str | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> SipRoute:
        if self.session is not None and self.webhook is not None:
            raise ValueError(f"route {self.number!r}: give either session or webhook, not both")
        if self.webhook is not None and not self.webhook.startswith(("http://", "https://")):
            raise ValueError(f"route {self.number!r}: webhook must be an http(s) URL")
        return self


class SipSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    # "host:port" to listen on (UDP); None: no SIP endpoint. VOXGATE_SIP_LISTEN overrides it.
    listen: str | None = None
    # The address written into SDP and Contact (what the trunk can reach); default: the
    # listen host, or this machine's address when listening on a wildcard.
    public_host: str | None = None
    rtp_ports: str = "30000-30999"
    webhook_secret: str | None = None
    # A webhook-routed call nobody accepts within this long is rejected (480).
    accept_timeout_s: float = Field(30.0, gt=0)
    trunks: list[SipTrunk] = Field(default_factory=list)
    routes: list[SipRoute] = Field(default_factory=list)

    @field_validator("rtp_ports")
    @classmethod
    def _check_ports(cls, value: str) -> str:
        low, _, high = value.partition("-")
        if not (low.isdigit() and high.isdigit() and 1024 <= int(low) < int(high) <= 65535):
            raise ValueError(f"rtp_ports {value!r} must be 'LOW-HIGH' within 1024-65535")
        return value

    @field_validator("webhook_secret", mode="before")
    @classmethod
    def _expand(cls, value: Any) -> Any:
        return expand_env(value, "a [sip] setting") if isinstance(value, str) else value

    @model_validator(mode="after")
    def _webhooks_need_a_secret(self) -> SipSettings:
        hooked = [r.number for r in self.routes if r.webhook is not None]
        if hooked and not self.webhook_secret:
            raise ValueError(
                f"routes {', '.join(hooked)} use a webhook: set [sip] webhook_secret to sign it"
            )
        return self

    @property
    def port_range(self) -> tuple[int, int]:
        low, _, high = self.rtp_ports.partition("-")
        return int(low), int(high)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="VOXGATE_", extra="forbid")

    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    data_dir: Path = Field(default_factory=_default_data_dir)
    log_level: str = "info"

    # Static bearer keys with every scope. With none of these and no key in the store, the
    # server is in development mode (loopback only, any key).
    api_keys: Annotated[list[str], NoDecode] = Field(default_factory=list)

    default_model: str = "gpt-realtime"
    instructions: str | None = None
    max_session_minutes: float = Field(60.0, gt=0)
    idle_timeout_s: float | None = Field(600.0, gt=0)
    # Largest WebSocket message accepted; above 21 MiB so a 15 MiB audio append fits.
    max_message_mb: float = Field(32.0, gt=0)
    max_sessions: int = Field(100, ge=1)
    shutdown_timeout_s: float = Field(10.0, ge=0)

    llm_base_url: str | None = None
    llm_api_key: str | None = None
    llm_model: str | None = None
    llm_timeout_s: float = Field(30.0, gt=0)
    # The model's context window in tokens: conversations longer than it are truncated per
    # the session's `truncation`. Unset: unknown, the whole conversation is sent.
    llm_context_tokens: int | None = Field(None, ge=256)
    # Stored prompts by id, for `prompt: {id, version, variables}` (JSON in the environment).
    prompts: dict[str, PromptSetting] = Field(default_factory=dict)

    # Speech to text: Whisper (the bundled tiny.en, or a CTranslate2 model directory given
    # in whisper_model), or pocketsphinx in stt_workers processes.
    stt: Literal["whisper", "pocketsphinx"] = "whisper"
    stt_workers: int = Field(4, ge=1)
    whisper_model: Path | None = None  # a CTranslate2 faster-whisper model directory
    whisper_device: str = "cpu"
    whisper_compute_type: str = "int8"
    # Decodings at once (None: one per core, at most 2) and threads each (see whisper.py).
    whisper_workers: int | None = Field(None, ge=1)
    whisper_threads: int = Field(1, ge=1)
    whisper_beam_size: int = Field(5, ge=1, le=10)
    # Text to speech: "piper" (the bundled voice, or piper_voice), "espeak", or None for
    # piper when a voice is installed, else espeak-ng.
    tts: Literal["piper", "espeak"] | None = None
    # A piper voice's .onnx (its config: the path + ".json").
    piper_voice: Path | None = None

    # WebRTC: STUN/TURN servers offered to ICE besides the host candidates, as URLs
    # ("stun:host:3478", "turn:user:secret@host:3478?transport=udp"), comma-separated in
    # the environment.
    ice_servers: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # A call whose peer connection is not up within this long ends.
    webrtc_connect_timeout_s: float = Field(30.0, gt=0)
    # Bounds on what one client can make the server hold or do (docs/limits.md).
    max_outbox_mb: float = Field(32.0, gt=0)
    send_timeout_s: float = Field(20.0, gt=0)
    max_conversation_items: int = Field(4096, ge=1)
    max_conversation_mb: float = Field(64.0, gt=0)
    max_item_mb: float = Field(8.0, gt=0)
    max_responses_in_flight: int = Field(4, ge=1)
    max_speech_chars: int = Field(20_000, ge=1)
    max_request_kb: float = Field(1024.0, gt=0)
    http_header_timeout_s: float = Field(10.0, gt=0)
    http_body_timeout_s: float = Field(30.0, gt=0)

    # Origins whose pages may call the HTTP API from a browser ("*": any; keys are bearer
    # headers, not cookies, so a page still needs a key).
    cors_origins: Annotated[list[str], NoDecode] = Field(default_factory=lambda: ["*"])

    # Several replicas: with a Redis URL they share concurrency leases, budget counters,
    # revocations and the directory of live calls; without one, state is per process.
    redis_url: str | None = None
    # Keeps deployments (or test runs) that share one Redis apart.
    redis_prefix: str = "voxgate:"
    # How other replicas reach this one (sideband attach to a call it owns);
    # default http://HOST:PORT, with a wildcard HOST replaced by this machine's name.
    advertise_url: str | None = None

    # Prices per model ([prices."MODEL"] tables, or VOXGATE_PRICES as JSON): they replace the
    # hosted models' list prices and price the embedded engines, which are free otherwise.
    prices: dict[str, Price] = Field(default_factory=dict)
    # Ledger on/off: usage rows, session records and transcripts in the database.
    ledger: bool = True

    # The store of keys, tenants, client secrets, usage and audit. Empty: a SQLite file
    # (WAL) in data_dir. PostgreSQL: "postgresql+asyncpg://user@host/db".
    database_url: str = ""
    # The server-wide default policy ([policy] table, or VOXGATE_POLICY as JSON); tenant,
    # key and client-secret policies only tighten it.
    policy: Policy = Field(default_factory=Policy)

    # Twilio Media Streams (docs/telephony.md); VOXGATE_TWILIO_AUTH_TOKEN sets its auth_token.
    twilio: TwilioSetting = Field(default_factory=TwilioSetting)

    @model_validator(mode="after")
    def _twilio_token_from_env(self) -> Settings:
        token = os.environ.get("VOXGATE_TWILIO_AUTH_TOKEN")
        if token:
            self.twilio = self.twilio.model_copy(update={"auth_token": token})
        return self

    # -- phone media (docs/telephony.md) --
    # Where session recordings (policy record_calls) are kept; unset: data_dir/recordings.
    recordings_dir: Path | None = None

    # --- Upstream Realtime services (docs/relay.md) ---
    # [[upstreams]] tables (VOXGATE_UPSTREAMS as JSON); the first whose models match serves.
    upstreams: list[UpstreamSetting] = Field(default_factory=list)
    # One upstream named "default" from the environment alone.
    upstream_url: str | None = None
    upstream_api_key: str | None = Field(None, repr=False)
    upstream_models: Annotated[list[str], NoDecode] = Field(default_factory=list)

    @model_validator(mode="after")
    def _env_upstream(self) -> Settings:
        if self.upstream_url:
            entry: dict[str, Any] = {"name": "default", "url": self.upstream_url}
            if self.upstream_api_key:
                entry["api_key"] = self.upstream_api_key
            if self.upstream_models:
                entry["models"] = self.upstream_models
            self.upstreams = [*self.upstreams, UpstreamSetting(**entry)]
        elif self.upstream_api_key or self.upstream_models:
            raise ValueError(
                "VOXGATE_UPSTREAM_API_KEY/_MODELS are set but VOXGATE_UPSTREAM_URL is not"
            )
        names = [u.name for u in self.upstreams]
        if len(set(names)) != len(names):
            raise ValueError(f"upstream names must be unique, got {names}")
        return self

    # -- server tools (docs/tools.md) --
    # [[tools]] tables (VOXGATE_TOOLS as a JSON list): tools voxgate runs itself, offered
    # to the model beside the client's own.
    tools: list[ToolSpec] = Field(default_factory=list)
    # Key of the HMAC-SHA256 signature (X-Voxgate-Signature) on every HTTP tool call.
    tools_signing_secret: str | None = None

    @field_validator("tools")
    @classmethod
    def _unique_tools(cls, value: list[ToolSpec]) -> list[ToolSpec]:
        return check_unique(value)

    # -- MCP ----------------------------------------------------------------------------------
    # MCP servers every session may use (docs/tools.md); clients add their own in
    # session.tools, within the policy's allowed_mcp_servers.
    mcp_servers: list[McpServerSetting] = Field(default_factory=list)
    # -- SIP (docs/telephony.md): [sip], [[sip.trunks]], [[sip.routes]] --------------------
    sip: SipSettings = Field(default_factory=SipSettings)
    # VOXGATE_SIP_LISTEN=0.0.0.0:5060 turns the endpoint on (overrides [sip] listen).
    sip_listen: str | None = None

    @model_validator(mode="after")
    def _sip_listen(self) -> Settings:
        if self.sip_listen:
            self.sip = self.sip.model_copy(update={"listen": self.sip_listen})
        if self.sip.listen is not None:
            host, _, port = self.sip.listen.rpartition(":")
            if not host or not port.isdigit():
                raise ValueError(f"sip listen {self.sip.listen!r} must be 'host:port'")
        return self

    @model_validator(mode="after")
    def _default_database(self) -> Settings:
        if not self.database_url:
            self.database_url = f"sqlite+aiosqlite:///{self.data_dir / 'voxgate.db'}"
        return self

    @field_validator("api_keys", "ice_servers", "cors_origins", "upstream_models", mode="before")
    @classmethod
    def _split_keys(cls, value: Any) -> Any:
        # Environment variables carry lists as "key1,key2".
        if isinstance(value, str):
            return [k.strip() for k in value.split(",") if k.strip()]
        return value

    @field_validator("redis_url")
    @classmethod
    def _check_redis_url(cls, value: str | None) -> str | None:
        if value and not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError(f"redis_url {value!r} must start with redis://, rediss:// or unix://")
        return value or None

    @field_validator("advertise_url")
    @classmethod
    def _check_advertise_url(cls, value: str | None) -> str | None:
        if value and not value.startswith(("http://", "https://")):
            raise ValueError(f"advertise_url {value!r} must start with http:// or https://")
        return value.rstrip("/") if value else None

    @field_validator("ice_servers")
    @classmethod
    def _check_ice(cls, value: list[str]) -> list[str]:
        for url in value:
            if not url.startswith(("stun:", "stuns:", "turn:", "turns:")):
                raise ValueError(
                    f"ICE server {url!r} must start with stun:, stuns:, turn: or turns:"
                )
        return value

    @property
    def ice_server_configs(self) -> list[dict[str, Any]]:
        """``ice_servers`` as RTCIceServer fields: credentials move out of TURN URLs."""
        configs: list[dict[str, Any]] = []
        for url in self.ice_servers:
            scheme, _, rest = url.partition(":")
            if "@" in rest and scheme.startswith("turn"):
                auth, _, host = rest.rpartition("@")
                user, _, secret = auth.partition(":")
                configs.append({"urls": f"{scheme}:{host}", "username": user, "credential": secret})
            else:
                configs.append({"urls": url})
        return configs

    @property
    def dev_mode(self) -> bool:
        """No static keys (the server also looks for keys in its store)."""
        return not self.api_keys

    @property
    def loopback(self) -> bool:
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        config = _config_file.get() or os.environ.get("VOXGATE_CONFIG")
        if config:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=Path(config)))
        return tuple(sources)


class SettingsError(Exception):
    """Settings that cannot work together; the message says what to change."""


def load_settings(
    config_file: Path | None = None, *, check_exposure: bool = True, **overrides: Any
) -> Settings:
    if config_file is not None and not config_file.is_file():
        raise SettingsError(f"config file {config_file} does not exist")
    config = os.environ.get("VOXGATE_CONFIG")
    if config_file is None and config and not Path(config).is_file():
        raise SettingsError(f"VOXGATE_CONFIG points at {config}, which does not exist")
    # The file reaches the settings sources through a context variable, not the process
    # environment: loading settings changes nothing for the rest of the process.
    token = _config_file.set(str(config_file) if config_file is not None else None)
    try:
        settings = Settings(**{k: v for k, v in overrides.items() if v is not None})
    finally:
        _config_file.reset(token)
    if check_exposure and settings.dev_mode and not settings.loopback:
        raise SettingsError(
            f"refusing to listen on {settings.host} without API keys: development mode (any "
            "key accepted) is only allowed on loopback. Set VOXGATE_API_KEYS=key1,key2 or "
            "listen on 127.0.0.1."
        )
    return settings
