"""Persistence behind the control interfaces: the database repositories and the Redis state."""
