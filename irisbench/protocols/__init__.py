"""Scoring rules as pure functions of plain data (no models, no I/O)."""
