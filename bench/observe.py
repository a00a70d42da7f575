"""What the long-running benchmarks watch: processes' resident memory, PostgreSQL connections,
latency percentiles, and the table rows they print (the style of run.py's)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import asyncpg


def descendants(pid: int) -> list[int]:
    """Every process below `pid` (its children, theirs, ...), from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # The command name is in parentheses and may hold spaces: the fields start after it.
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(parent, []).append(int(entry.name))
    found: list[int] = []
    stack = [pid]
    while stack:
        for child in children.get(stack.pop(), []):
            found.append(child)
            stack.append(child)
    return sorted(found)


def resident_mb(pid: int) -> float | None:
    """VmRSS of /proc/<pid>/status in MB (10^6 bytes); None once the process is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024 / 1e6
    except OSError:
        return None
    return None


def worker_pids(pid: int) -> list[int]:
    """The processes of a server that do the work: its descendants, or itself if it has none
    (Granian's and Celery's workers are children of the process started)."""
    return descendants(pid) or [pid]


async def database_connections(admin_dsn: str, database: str) -> int:
    """Connections to `database` now (pg_stat_activity), not counting the one asking."""
    connection = await asyncpg.connect(f"{admin_dsn}/postgres")
    try:
        count = await connection.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = $1", database
        )
        return int(count)
    finally:
        await connection.close()


def database_connections_now(admin_dsn: str, database: str) -> int:
    return asyncio.run(database_connections(admin_dsn, database))


def percentile(values: Sequence[float], share: float) -> float:
    """The nearest-rank percentile (share in 0..1) of `values`; 0.0 when there are none."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * share // 1))
    return ordered[int(rank) - 1]


@dataclass(frozen=True)
class Figure:
    """One row: what was measured, its value as text, the target, and whether it was met
    (None: no target, or not judged)."""

    figure: str
    value: str
    target: str = "—"
    met: bool | None = None

    @property
    def verdict(self) -> str:
        if self.met is None:
            return "—"
        return "met" if self.met else "**missed**"


def render_figures(title: str, preamble: Sequence[str], figures: Sequence[Figure]) -> str:
    lines = [f"## {title}", "", *preamble, ""]
    lines.append("| figure | value | target | verdict |")
    lines.append("|---|---|---|---|")
    for row in figures:
        lines.append(f"| {row.figure} | {row.value} | {row.target} | {row.verdict} |")
    return "\n".join(lines) + "\n"


def machine_note() -> str:
    load = os.getloadavg()
    return f"{os.cpu_count()} cores, load average {load[0]:.1f} at the end"
