"""Thin wire adapters between clients and sessions (WebSocket today)."""
