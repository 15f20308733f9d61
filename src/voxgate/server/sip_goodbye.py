"""The spoken goodbye of a phone call that reached a limit (its duration, a budget, the idle
timeout): a caller on a phone line hears why the call ends instead of a sudden silence. It is
played on the call's RTP stream after the session ended and before the BYE."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from contextlib import aclosing

from ..audio import OutputConverter
from ..session.engines import EngineSet
from ..session.session import Session
from ..transports.rtp import RtpStream

log = logging.getLogger(__name__)
GOODBYE = "This call has reached its limit and will now end. Goodbye."
# Reasons a session ends on its own limits (not the caller's or the operator's doing).
LIMIT_REASONS = {"expired", "budget_exceeded", "idle"}
GOODBYE_TIMEOUT_S = 15.0


def needs_goodbye(session: Session) -> bool:
    return session.ended is not None and session.ended.reason in LIMIT_REASONS


async def say_goodbye(engines: EngineSet, session: Session, rtp: RtpStream) -> None:
    """Synthesise the goodbye in the session's voice and wait until it has played."""
    played = asyncio.Event()

    async def stopped(response_id: str) -> None:
        played.set()

    rtp.bind(stopped)
    rtp.clear(None)
    voice = session.connection.config.voice
    converter = OutputConverter(engines.tts.sample_rate, rtp.format)
    try:
        async with asyncio.timeout(GOODBYE_TIMEOUT_S):
            async with aclosing(engines.tts.synthesize(GOODBYE, voice=voice)) as chunks:
                async for chunk in chunks:
                    rtp.play("goodbye", "goodbye", 0, converter.process(chunk))
            rtp.play("goodbye", "goodbye", 0, converter.flush())
            rtp.end("goodbye")
            await played.wait()
    except TimeoutError:
        log.warning("the goodbye of session %s did not finish playing", session.id)
    except Exception:  # a failing voice must not keep the call open
        log.exception("the goodbye of session %s could not be spoken", session.id)
        with contextlib.suppress(Exception):
            rtp.clear(None)
