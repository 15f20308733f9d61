"""The OpenAI Realtime wire protocol, sans-IO: events, session rules, conversation, responses."""
