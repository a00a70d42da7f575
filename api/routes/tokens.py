"""Placeholder."""

ROUTES: list[object] = []
