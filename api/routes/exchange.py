"""Placeholder: filled in by the exchange work."""

ROUTES: list[object] = []
