"""The sideband clients of one session (a backend watching and steering a call).

Each sideband gets the session's server events from the moment it joined, through a backlog
of its own, so a slow sideband never holds up the primary client or the other sidebands; one
that falls too far behind is disconnected. Its client events go into the session's inbox and
join the primary client's in one order.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from .backlog import Backlog
from .transport import Transport, TransportClosed

log = logging.getLogger(__name__)
# Server events a sideband client may fall behind by before it is disconnected.
SIDEBAND_BACKLOG = 4096


class Sidebands:
    def __init__(self, session_id: str, max_bytes: int) -> None:
        self._session_id = session_id
        self._max_bytes = max_bytes
        self._queues: set[Backlog] = set()

    async def serve(
        self,
        transport: Transport,
        created: str,
        deliver: Callable[[str | bytes], Awaitable[None]],
        ended: Callable[[], bool],
    ) -> None:
        """Serve one sideband until it leaves or the session ends: ``created`` (the
        ``session.created`` it sees first), then every mirrored event; its frames go to
        ``deliver``."""
        queue = Backlog(SIDEBAND_BACKLOG, self._max_bytes)
        queue.put_nowait(created)
        self._queues.add(queue)

        async def read() -> None:
            with contextlib.suppress(TransportClosed):
                while True:
                    await deliver(await transport.receive())

        async def write() -> None:
            with contextlib.suppress(TransportClosed):
                while (text := await queue.get()) is not None:
                    await transport.send(text)

        name = self._session_id
        tasks = [
            asyncio.create_task(read(), name=f"{name}:sideband-reader"),
            asyncio.create_task(write(), name=f"{name}:sideband-writer"),
        ]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            self._queues.discard(queue)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            with contextlib.suppress(Exception):  # the peer may be gone already
                await transport.close(1000, "session ended" if ended() else "")

    def mirror(self, text: str | None) -> None:
        """A server event for every sideband (None: the session is over)."""
        for queue in list(self._queues):
            try:
                queue.put_nowait(text)
            except asyncio.QueueFull:
                log.warning(
                    "sideband of %s fell too far behind; disconnecting it", self._session_id
                )
                self._queues.discard(queue)
                queue.clear()
                queue.put_nowait(None)
