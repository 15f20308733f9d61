"""Which engine serves a session: the first configured upstream whose ``models`` globs match
the session's model (relayed there), else the embedded pipeline (None)."""

from __future__ import annotations

from collections.abc import Sequence

from ..engines.upstream import Upstream
from ..settings import Settings, UpstreamSetting


def upstream_of(setting: UpstreamSetting) -> Upstream:
    """The engine's view of an ``[[upstreams]]`` entry (the key already expanded)."""
    return Upstream(
        name=setting.name,
        url=setting.url,
        api_key=setting.api_key,
        models=tuple(setting.models),
        max_session_seconds=setting.max_session_seconds,
        direct=setting.direct,
        stall_timeout_s=setting.stall_timeout_s,
        headers=tuple(setting.headers.items()),
    )


def upstreams(settings: Settings) -> list[Upstream]:
    return [upstream_of(s) for s in settings.upstreams]


def route(
    settings_or_upstreams: Settings | Sequence[Upstream | UpstreamSetting], model: str
) -> Upstream | None:
    """The upstream that serves ``model`` (the first that matches), or None: embedded."""
    found = (
        settings_or_upstreams.upstreams
        if isinstance(settings_or_upstreams, Settings)
        else settings_or_upstreams
    )
    for entry in found:
        upstream = entry if isinstance(entry, Upstream) else upstream_of(entry)
        if upstream.serves(model):
            return upstream
    return None
