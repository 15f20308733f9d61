"""Live sessions: the task group around the protocol core, responses, limits, registry."""
