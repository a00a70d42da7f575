"""Leak reports: POST /leaks (the vendor, for any scanner or a person) and POST /leaks/github
(GitHub's secret-scanning partner protocol, authenticated by GitHub's signature)."""

from __future__ import annotations

from typing import Any

from litestar import Request, post

from api.dependencies import CallerDep, NowDep, ServicesDep, SessionDep
from api.guards import VENDOR_ONLY
from api.schemas.common import read_body, reads
from api.schemas.leaks import (
    GitHubLabelOut,
    GitHubMatches,
    GitHubMatchIn,
    LeakReportOut,
    LeakReportRequest,
    label_of,
    leak_report_response,
)
from api.security_headers import CARRIES_SECRET
from api.state import Services
from api.transaction import commit
from domain import leaks
from domain.auth import Caller

LEAKS = "/leaks"
GITHUB = "/leaks/github"


def _reporting(services: Services, reporter: str, caller: Caller | None) -> leaks.LeakReporting:
    return leaks.LeakReporting(
        policy=services.settings.leak_policy,
        shape=services.secret_shape,
        keyring=services.keyring,
        reporter=reporter,
        caller=caller,
    )


# Both carry a leaked value in (and GitHub's answer echoes it): never cached.
@post(
    LEAKS,
    status_code=200,
    dependencies=VENDOR_ONLY,
    opt=reads(LeakReportRequest, CARRIES_SECRET),
)
async def report_leak(
    request: Request[Any, Any, Any],
    vendor: CallerDep,
    db_session: SessionDep,
    services: ServicesDep,
    now: NowDep,
) -> LeakReportOut:
    """200 with what the report found and did, whether or not the value was ours."""
    data: LeakReportRequest = await read_body(request)
    reporting = _reporting(services, "vendor", vendor)
    verdict = await leaks.report_leak(db_session, reporting, data.leak(), now)
    await commit(db_session, services, reporting.after)
    return leak_report_response(verdict)


@post(GITHUB, status_code=200, opt=reads(GitHubMatches, CARRIES_SECRET))
async def report_github_leaks(
    request: Request[Any, Any, Any], db_session: SessionDep, services: ServicesDep, now: NowDep
) -> list[GitHubLabelOut]:
    """GitHub's signed list of matches; the answer labels each, in order."""
    # The signature is over the raw body, checked before it is decoded (the same bytes).
    await services.github_keys.verify(request.headers, await request.body())
    matches: list[GitHubMatchIn] = await read_body(request)
    reporting = _reporting(services, "github", None)
    verdicts = await leaks.report_github_matches(
        db_session, reporting, [match.match() for match in matches], now
    )
    await commit(db_session, services, reporting.after)
    return [
        GitHubLabelOut(token_raw=match.token, token_type=match.type, label=label_of(verdict))
        for match, verdict in zip(matches, verdicts, strict=True)
    ]


ROUTES = [report_leak, report_github_leaks]
