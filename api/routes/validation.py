"""Placeholder: filled in by the validation work."""

ROUTES: list[object] = []
