"""The rules of m2m-tokens: no web framework and no task queue are imported here."""
