"""voxgate: a self-hosted realtime voice-agent server speaking the OpenAI Realtime API."""

__version__ = "0.1.0"
