"""Ending live sessions whose key or client secret was revoked.

Revocations reach a server two ways: through the shared state's broadcast (REST revocations
on any replica, at once), and through the store's change stamp, which every change bumps
(the CLI's too) and this watcher polls every POLL_S: on a change it reloads the cached keys
and tenant policies and ends the live sessions of revoked keys and secrets — so a
`voxgate keys revoke` from a shell takes effect within that interval without a message bus.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from ..session.manager import SessionManager
from ..session.session import Session
from ..storage.keys import KeyRepository
from ..storage.secrets import SecretRepository

log = logging.getLogger(__name__)
POLL_S = 0.1


def end_revoked(session: Session, kind: str) -> None:
    if kind == "key":
        code, what = "api_key_revoked", "The API key this session was opened with"
    else:
        code, what = "client_secret_revoked", "The client secret this session was opened with"
    session.end("revoked", code, f"{what} has been revoked; the session is over.", code=1008)


class RevocationWatcher:
    def __init__(
        self,
        keys: KeyRepository,
        secrets: SecretRepository,
        manager: SessionManager,
        on_change: Callable[[], Awaitable[None]],
    ) -> None:
        self.on_change = on_change
        self.keys = keys
        self.secrets = secrets
        self.manager = manager
        self._stamp = -1
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._stamp = await self.keys.stamp()
        await self.on_change()
        self._task = asyncio.get_running_loop().create_task(self._run(), name="revocations")

    def revoked(self, kind: str, ident: str) -> None:
        """A revocation announced through the shared state (any replica)."""
        for session in list(self.manager.sessions.values()):
            p = session.principal
            if p is None:
                continue
            if (kind == "key" and p.key_id == ident) or (
                kind == "secret" and p.client_secret_id == ident
            ):
                end_revoked(session, kind)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(POLL_S)
            try:
                stamp = await self.keys.stamp()
                if stamp != self._stamp:
                    self._stamp = stamp
                    await self.on_change()
                    await self.sweep()
            except Exception:  # the database may be restarting; try again next time
                log.warning("checking for revocations failed", exc_info=True)

    async def sweep(self) -> None:
        """End every live session whose key or secret is revoked in the store."""
        principals = [(s, s.principal) for s in self.manager.sessions.values() if s.principal]
        key_ids = sorted({p.key_id for _, p in principals if p.key_id})
        secret_ids = sorted({p.client_secret_id for _, p in principals if p.client_secret_id})
        keys = await self.keys.revoked_among(key_ids)
        secrets = await self.secrets.revoked_among(secret_ids)
        for session, p in principals:
            if p.key_id in keys:
                end_revoked(session, "key")
            elif p.client_secret_id in secrets:
                end_revoked(session, "secret")

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
