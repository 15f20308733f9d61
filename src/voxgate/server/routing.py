"""Which upstream serves a model: the first in the settings whose ``models`` globs match."""

from __future__ import annotations

from collections.abc import Sequence
from fnmatch import fnmatchcase

from ..settings import Settings, UpstreamSetting


def route(
    settings_or_upstreams: Settings | Sequence[UpstreamSetting], model: str
) -> UpstreamSetting | None:
    upstreams = (
        settings_or_upstreams.upstreams
        if isinstance(settings_or_upstreams, Settings)
        else settings_or_upstreams
    )
    for upstream in upstreams:
        if any(fnmatchcase(model, pattern) for pattern in upstream.models):
            return upstream
    return None
