"""The targets of issue 3 item 8, and the Markdown table that puts the figures next to them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum

from loadgen import Argon2Bound, LoadResult

VALIDATION_MIN_RATIO = 0.3
VALIDATION_AIM_RATIO = 0.5
VALIDATION_MAX_P99_MS = 3.0
P99_TARGET_CONNECTIONS = 4
REFRESH_MIN_RATIO = 0.06
EXCHANGE_MIN_BOUND_SHARE = 0.8
# A constant-JSON p50 this slow at a few connections is no CPU cost: it is Nagle's algorithm
# meeting delayed ACKs. (At many connections, queueing alone can get there.)
NAGLE_SUSPECT_P50_MS = 30.0
NAGLE_SUSPECT_MAX_CONNECTIONS = 8


class Kind(Enum):
    BASELINE = "baseline"
    VALIDATION = "validation"
    EXCHANGE = "exchange"
    REFRESH = "refresh"
    ACTIVE = "active"


@dataclass
class Row:
    title: str
    kind: Kind
    connections: int
    result: LoadResult | None = None
    unavailable: str | None = None  # the route is not built yet (404)
    failure: str | None = None  # it exists but its setup failed
    note: str | None = None


def target_text(kind: Kind, connections: int, bound: Argon2Bound | None) -> str:
    if kind is Kind.VALIDATION:
        text = f"≥ {VALIDATION_MIN_RATIO}x baseline (aim {VALIDATION_AIM_RATIO}x)"
        if connections == P99_TARGET_CONNECTIONS:
            text += f", p99 < {VALIDATION_MAX_P99_MS:g} ms"
        return text
    if kind is Kind.REFRESH:
        return f"≥ {REFRESH_MIN_RATIO}x baseline"
    if kind is Kind.EXCHANGE:
        rate = f" ({bound.verifies_per_second:.0f}/s)" if bound else ""
        return f"≥ {EXCHANGE_MIN_BOUND_SHARE}x argon2 bound{rate}"
    return "—"


def verdict(row: Row, baseline_rps: float | None, bound: Argon2Bound | None) -> str:
    result = row.result
    if result is None:
        return "—"
    if result.requests == 0:
        return "invalid: no answer completed during the run"
    if not result.valid:
        causes = [result.failed_answers] if result.failed_answers else []
        if result.failed_socket:
            causes.append(f"{result.failed_socket} socket errors")
        return f"invalid: {result.error_share:.1%} failed ({', '.join(causes)})"
    rps = result.successes_per_second
    if row.kind is Kind.VALIDATION and baseline_rps:
        ratio = rps / baseline_rps
        misses = []
        if ratio < VALIDATION_MIN_RATIO:
            misses.append(f"below {VALIDATION_MIN_RATIO}x")
        if row.connections == P99_TARGET_CONNECTIONS and result.p99_ms >= VALIDATION_MAX_P99_MS:
            misses.append(f"p99 ≥ {VALIDATION_MAX_P99_MS:g} ms")
        if misses:
            return "**missed**: " + ", ".join(misses)
        return "met, aim met" if ratio >= VALIDATION_AIM_RATIO else "met, aim not met"
    if row.kind is Kind.REFRESH and baseline_rps:
        met = rps / baseline_rps >= REFRESH_MIN_RATIO
        return "met" if met else f"**missed**: below {REFRESH_MIN_RATIO}x"
    if row.kind is Kind.EXCHANGE and bound:
        share = rps / bound.verifies_per_second
        met = share >= EXCHANGE_MIN_BOUND_SHARE
        return f"{share:.2f}x bound: " + ("met" if met else "**missed**")
    return "—"


def _row_cells(row: Row, baseline_rps: float | None, bound: Argon2Bound | None) -> list[str]:
    target = target_text(row.kind, row.connections, bound)
    notes = [row.note] if row.note else []
    if row.result is not None and row.result.valid and row.result.failed_answers:
        notes.append(f"failed: {row.result.failed_answers}")
    note = "; ".join(notes)
    if row.result is None:
        reason = row.unavailable or row.failure or ""
        figure = "not available" if row.unavailable else "failed"
        return [row.title, str(row.connections), figure, "—", "—", "—", target, "—", reason]
    rps = row.result.successes_per_second
    ratio = f"{rps / baseline_rps:.2f}x" if baseline_rps else "—"
    answered = row.result.requests > 0
    return [
        row.title,
        str(row.connections),
        f"{rps:,.0f}",
        f"{row.result.p50_ms:.2f}" if answered else "—",
        f"{row.result.p99_ms:.2f}" if answered else "—",
        ratio,
        target,
        verdict(row, baseline_rps, bound),
        note,
    ]


HEADER = ["Measurement", "Conns", "req/s", "p50 ms", "p99 ms", "x baseline", "Target", "Verdict"]
VERDICT = HEADER.index("Verdict")


def render(
    rows: Sequence[Row], bound: Argon2Bound | None, preamble: Sequence[str]
) -> tuple[str, list[str]]:
    """The Markdown report, and the warnings it contains (also worth printing on their own)."""
    baselines = {
        row.connections: row.result.successes_per_second
        for row in rows
        if row.kind is Kind.BASELINE and row.result is not None and row.result.valid
    }
    lines = ["# m2m-tokens benchmark", "", *preamble, ""]
    lines.append("| " + " | ".join([*HEADER, "Notes"]) + " |")
    lines.append("|" + "---|" * (len(HEADER) + 1))
    suspect = _nagle_suspect(rows)
    for row in rows:
        cells = _row_cells(row, baselines.get(row.connections), bound)
        if suspect and row.kind is not Kind.BASELINE and row.result and row.result.valid:
            cells[VERDICT] = "not judged: see the warning"
        lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    lines.append("")
    if bound is not None:
        p = bound.parameters
        lines.append(
            f"Argon2 bound: {bound.verifies_per_second:.1f} verifies/s = {bound.cores} cores ÷ "
            f"{bound.verify_seconds * 1000:.1f} ms per `PasswordHasher.verify` with "
            f"{bound.cores} threads verifying at once ({bound.verifies} verifications, right "
            f"before the exchange load; one alone: {bound.alone_seconds * 1000:.1f} ms), with "
            f"the service's parameters: argon2id time_cost {p.time_cost}, memory "
            f"{p.memory_kib} KiB, parallelism {p.parallelism}."
        )
        lines.append("")
    warnings = [_nagle_warning(suspect)] if suspect is not None else []
    lines.extend(f"**Warning**: {warning}" for warning in warnings)
    return "\n".join(lines).rstrip() + "\n", warnings


def _nagle_suspect(rows: Sequence[Row]) -> Row | None:
    """A baseline row that only Nagle's algorithm explains, if there is one."""
    for row in rows:
        if (
            row.kind is Kind.BASELINE
            and row.result is not None
            and row.connections <= NAGLE_SUSPECT_MAX_CONNECTIONS
            and row.result.p50_ms >= NAGLE_SUSPECT_P50_MS
        ):
            return row
    return None


def _nagle_warning(row: Row) -> str:
    assert row.result is not None
    return (
        f"the baseline's p50 is {row.result.p50_ms:.0f} ms at {row.connections} "
        "connections: accepted sockets lack TCP_NODELAY (uvicorn with --workers > 1, "
        "Kludex/uvicorn#3149), so every figure here measures Nagle's algorithm and "
        "delayed ACKs (about 40 ms a request), not the code, and no target is judged. "
        "See bench/README.md."
    )
