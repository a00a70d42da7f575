"""The targets, and the Markdown table that puts each figure beside its peer's,
measured in the same run, and its target."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum

from loadgen import Argon2Bound, LoadResult

# Validation against the peer's introspection of its own opaque tokens.
VALIDATION_MIN_RATIO = 1.5
VALIDATION_AIM_RATIO = 2.0
VALIDATION_MAX_P99_MS = 2.0
FEW_CONNECTIONS = 4  # p99 bounds: a fixed one at this count, the peer's above it
# Exchange against what argon2 alone allows; p99 bounded where connections outnumber cores.
EXCHANGE_MIN_BOUND_SHARE = 0.8
EXCHANGE_MAX_P99_MS = 1000.0
# Refresh against the peer's client-credentials grant.
REFRESH_MIN_RATIO = 0.3
REFRESH_AIM_RATIO = 0.5
# /active: 32 answers/s with 100,000 tokens before the per-process kept answer (uvicorn, one
# query an answer).
ACTIVE_BEFORE_PER_SECOND = 32.0
ACTIVE_MIN_GAIN = 10.0
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


class PeerLoad(Enum):
    """What of the peer's a row is compared with."""

    INTROSPECTION = "peer introspection"
    GRANT = "peer client-credentials grant"


PEER_OF = {Kind.VALIDATION: PeerLoad.INTROSPECTION, Kind.REFRESH: PeerLoad.GRANT}


@dataclass
class Row:
    title: str
    kind: Kind
    connections: int
    result: LoadResult | None = None
    unavailable: str | None = None  # the route is not built yet (404)
    failure: str | None = None  # it exists but its setup failed
    note: str | None = None
    peer: LoadResult | None = None  # the peer's figure it is compared with, same connections


def target_text(kind: Kind, connections: int, bound: Argon2Bound | None) -> str:
    if kind is Kind.VALIDATION:
        text = f"≥ {VALIDATION_MIN_RATIO}x peer (aim {VALIDATION_AIM_RATIO:g}x)"
        if connections <= FEW_CONNECTIONS:
            return text + f", p99 < {VALIDATION_MAX_P99_MS:g} ms"
        return text + ", p99 < peer's"
    if kind is Kind.REFRESH:
        return f"≥ {REFRESH_MIN_RATIO}x peer (aim {REFRESH_AIM_RATIO}x)"
    if kind is Kind.EXCHANGE:
        rate = f" ({bound.verifies_per_second:.0f}/s)" if bound else ""
        text = f"≥ {EXCHANGE_MIN_BOUND_SHARE}x argon2 bound{rate}"
        if connections > FEW_CONNECTIONS:
            text += f", p99 < {EXCHANGE_MAX_P99_MS / 1000:g} s"
        return text
    if kind is Kind.ACTIVE:
        gain = ACTIVE_MIN_GAIN * ACTIVE_BEFORE_PER_SECOND
        return f"≥ {gain:.0f}/s ({ACTIVE_MIN_GAIN:g}x the {ACTIVE_BEFORE_PER_SECOND:g}/s before)"
    return "—"


def ratio(row: Row, bound: Argon2Bound | None) -> float | None:
    """The row's figure over what it is compared with: the peer's, or the argon2 bound."""
    if row.result is None:
        return None
    rps = row.result.successes_per_second
    if row.kind is Kind.EXCHANGE:
        return rps / bound.verifies_per_second if bound else None
    if row.kind is Kind.ACTIVE:
        return rps / ACTIVE_BEFORE_PER_SECOND
    if row.peer is not None and row.peer.valid and row.peer.successes_per_second:
        return rps / row.peer.successes_per_second
    return None


def verdict(row: Row, bound: Argon2Bound | None) -> str:
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
    share = ratio(row, bound)
    if row.kind is Kind.BASELINE:
        return "—"
    if share is None:
        return "not judged: no peer figure" if row.kind in PEER_OF else "—"
    misses = []
    aim = None
    if row.kind is Kind.VALIDATION:
        if share < VALIDATION_MIN_RATIO:
            misses.append(f"below {VALIDATION_MIN_RATIO}x")
        if row.connections <= FEW_CONNECTIONS and result.p99_ms >= VALIDATION_MAX_P99_MS:
            misses.append(f"p99 ≥ {VALIDATION_MAX_P99_MS:g} ms")
        if row.connections > FEW_CONNECTIONS and row.peer and result.p99_ms >= row.peer.p99_ms:
            misses.append("p99 ≥ peer's")
        aim = share >= VALIDATION_AIM_RATIO
    elif row.kind is Kind.REFRESH:
        if share < REFRESH_MIN_RATIO:
            misses.append(f"below {REFRESH_MIN_RATIO}x")
        aim = share >= REFRESH_AIM_RATIO
    elif row.kind is Kind.EXCHANGE:
        if share < EXCHANGE_MIN_BOUND_SHARE:
            misses.append(f"below {EXCHANGE_MIN_BOUND_SHARE}x")
        if row.connections > FEW_CONNECTIONS and result.p99_ms >= EXCHANGE_MAX_P99_MS:
            misses.append(f"p99 ≥ {EXCHANGE_MAX_P99_MS / 1000:g} s")
    elif row.kind is Kind.ACTIVE and share < ACTIVE_MIN_GAIN:
        misses.append(f"below {ACTIVE_MIN_GAIN:g}x")
    if misses:
        return "**missed**: " + ", ".join(misses)
    if aim is None:
        return "met"
    return "met, aim met" if aim else "met, aim not met"


def _compared_with(row: Row) -> str:
    if row.kind is Kind.EXCHANGE:
        return "argon2 bound"
    if row.kind is Kind.ACTIVE:
        return "before"
    peer = PEER_OF.get(row.kind)
    return peer.value if peer else "—"


def _row_cells(row: Row, bound: Argon2Bound | None) -> list[str]:
    target = target_text(row.kind, row.connections, bound)
    notes = [row.note] if row.note else []
    if row.result is not None and row.result.valid and row.result.failed_answers:
        notes.append(f"failed: {row.result.failed_answers}")
    if row.peer is not None and not row.peer.valid:
        notes.append(f"peer invalid: {row.peer.error_share:.1%} failed")
    note = "; ".join(notes)
    peer = row.peer
    peer_cells = (
        [f"{peer.successes_per_second:,.0f}", f"{peer.p99_ms:.2f}"]
        if peer is not None and peer.requests
        else ["—", "—"]
    )
    if row.kind is Kind.EXCHANGE and bound is not None:
        peer_cells = [f"{bound.verifies_per_second:,.0f}", "—"]
    if row.kind is Kind.ACTIVE:
        peer_cells = [f"{ACTIVE_BEFORE_PER_SECOND:,.0f}", "—"]
    if row.result is None:
        reason = row.unavailable or row.failure or ""
        figure = "not available" if row.unavailable else "failed"
        return [
            row.title,
            str(row.connections),
            figure,
            "—",
            "—",
            _compared_with(row),
            *peer_cells,
            "—",
            target,
            "—",
            reason,
        ]
    answered = row.result.requests > 0
    share = ratio(row, bound)
    return [
        row.title,
        str(row.connections),
        f"{row.result.successes_per_second:,.0f}",
        f"{row.result.p50_ms:.2f}" if answered else "—",
        f"{row.result.p99_ms:.2f}" if answered else "—",
        _compared_with(row),
        *peer_cells,
        f"{share:.2f}x" if share is not None else "—",
        target,
        verdict(row, bound),
        note,
    ]


HEADER = [
    "Measurement",
    "Conns",
    "req/s",
    "p50 ms",
    "p99 ms",
    "Compared with",
    "its req/s",
    "its p99 ms",
    "Ratio",
    "Target",
    "Verdict",
]
VERDICT = HEADER.index("Verdict")


def render(
    rows: Sequence[Row], bound: Argon2Bound | None, preamble: Sequence[str]
) -> tuple[str, list[str]]:
    """The Markdown report, and the warnings it contains (also worth printing on their own)."""
    lines = ["# m2m-tokens benchmark", "", *preamble, ""]
    lines.append("| " + " | ".join([*HEADER, "Notes"]) + " |")
    lines.append("|" + "---|" * (len(HEADER) + 1))
    suspect = _nagle_suspect(rows)
    for row in rows:
        cells = _row_cells(row, bound)
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
        "connections: accepted sockets lack TCP_NODELAY, so every figure here measures "
        "Nagle's algorithm and delayed ACKs (about 40 ms a request), not the code, and no "
        "target is judged. See bench/README.md."
    )
