"""Engines: interfaces (base.py), providers, and scripted fakes for tests (testing.py)."""
