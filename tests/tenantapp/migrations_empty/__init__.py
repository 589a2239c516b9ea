"""A migrations package with no migration in it: check E012 must still fire (tests/test_registry.py)."""
