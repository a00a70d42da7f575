"""Limits on JSON decoded from outside (bodies, webhook events), checked without recursion."""

from __future__ import annotations

from typing import Final

# Metadata and events are flat records in practice; the bound keeps every later walk over a value
# (its JSON encoding, its storage) far from the interpreter's recursion limit.
MAX_DEPTH: Final = 32


def refusal(value: object, max_depth: int = MAX_DEPTH) -> str | None:
    """Why `value` is refused (a NUL in a string or key, or objects and lists nested deeper than
    `max_depth`), or None. It walks with a stack of its own, not by recursion, so no depth of
    nesting can exhaust the interpreter's."""
    pending: list[tuple[object, int]] = [(value, 1)]
    while pending:
        item, level = pending.pop()
        if isinstance(item, str):
            if "\x00" in item:
                return "must not contain NUL characters"
        elif isinstance(item, dict | list):
            if level > max_depth:
                return f"must not nest deeper than {max_depth} levels"
            children = [*item.keys(), *item.values()] if isinstance(item, dict) else item
            pending.extend((child, level + 1) for child in children)
    return None
