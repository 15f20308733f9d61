"""Opening the WebSocket, with a message that says what to try when it cannot be opened."""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidHandshake, InvalidStatus, InvalidURI

from .options import DEFAULT_URL, CallError, CallOptions

MAX_MESSAGE_BYTES = 16 * 1024 * 1024


def realtime_url(url: str, model: str | None) -> str:
    """``url`` as a WebSocket URL (http → ws, https → wss), with ``?model=`` if given."""
    parts = urlsplit(url)
    scheme = {"http": "ws", "https": "wss"}.get(parts.scheme, parts.scheme)
    query = parts.query
    if model:
        pairs = [(k, v) for k, v in parse_qsl(parts.query) if k != "model"]
        query = urlencode([*pairs, ("model", model)])
    return urlunsplit((scheme, parts.netloc, parts.path, query, parts.fragment))


async def open_connection(url: str, options: CallOptions) -> ClientConnection:
    headers = {"Authorization": f"Bearer {options.api_key}"} if options.api_key else {}
    try:
        return await connect(
            url,
            additional_headers=headers,
            open_timeout=options.timeout_s,
            max_size=MAX_MESSAGE_BYTES,
        )
    except InvalidURI:
        raise CallError(f"{url} is not a WebSocket URL; expected e.g. {DEFAULT_URL}") from None
    except InvalidStatus as exc:
        status = exc.response.status_code
        hint = {
            401: "; check --api-key",
            403: f"; check --api-key and the path (usually {urlsplit(DEFAULT_URL).path})",
            404: f"; check the path (usually {urlsplit(DEFAULT_URL).path})",
        }
        raise CallError(
            f"{url} refused the WebSocket connection with HTTP {status}{hint.get(status, '')}"
        ) from None
    except TimeoutError:
        raise CallError(
            f"no answer from {url} within {options.timeout_s:g} s while connecting"
        ) from None
    except (OSError, InvalidHandshake) as exc:
        reason = "connection refused" if isinstance(exc, ConnectionRefusedError) else str(exc)
        raise CallError(
            f"cannot reach a voxgate server at {url} ({reason}). Is it running? "
            "Start one with `voxgate serve`."
        ) from None
