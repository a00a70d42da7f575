"""Leak report shapes: the vendor's report by value, and GitHub's secret-scanning payload."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from api.schemas.common import Body, Out
from domain.leaks import GitHubMatch, Leak, LeakVerdict

# A JWT's length grows with its claims; the body size limit bounds the whole request anyway.
MAX_TOKEN = 8192
MAX_URL = 2048
MAX_SOURCE = 255
MAX_GITHUB_MATCHES = 1000

Token = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_TOKEN)]
Url = Annotated[str, msgspec.Meta(max_length=MAX_URL)]
Source = Annotated[str, msgspec.Meta(max_length=MAX_SOURCE)]
Label = Literal["true_positive", "false_positive"]


class LeakReportRequest(Body):
    """POST /leaks: a value seen where it should not be, and optionally where and by what."""

    token: Token
    url: Url | None = None
    source: Source | None = None

    def leak(self) -> Leak:
        return Leak(self.token, self.url, self.source)


class LeakReportOut(Out):
    outcome: str
    label: Label
    kind: str | None
    message: str


def label_of(verdict: LeakVerdict) -> Label:
    """GitHub's labels: true_positive when the value was ours and worked when reported."""
    return "true_positive" if verdict.live else "false_positive"


def leak_report_response(verdict: LeakVerdict) -> LeakReportOut:
    return LeakReportOut(
        outcome=verdict.outcome,
        label=label_of(verdict),
        kind=verdict.kind,
        message=verdict.message,
    )


class GitHubMatchIn(msgspec.Struct, kw_only=True):
    """One match in GitHub's payload. Fields GitHub may add later are ignored, not refused."""

    token: Token
    type: Source
    url: Url | None = None
    source: Source | None = None

    def match(self) -> GitHubMatch:
        return GitHubMatch(self.token, self.type, self.url, self.source)


GitHubMatches = Annotated[list[GitHubMatchIn], msgspec.Meta(max_length=MAX_GITHUB_MATCHES)]


class GitHubLabelOut(msgspec.Struct, kw_only=True):
    """GitHub's feedback shape: snake_case as GitHub reads it."""

    token_raw: str
    token_type: str
    label: Label
