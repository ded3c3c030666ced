"""Adapters that implement the ports on real engines (SQLite, in-process broker)."""
