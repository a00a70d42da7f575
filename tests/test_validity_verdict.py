"""The verdict on a token from the cache entries read for it: pure, no Redis, no database."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from domain.errors import Disabled, NotFound, Unauthenticated
from domain.validity.entries import (
    DELETED,
    ENTRY_TTL_SECONDS,
    ENV_KEY,
    Principal,
    TokenRow,
    Value,
    _microseconds,
    _tenant_key,
    _user_key,
    incarnation,
)
from domain.validity.verdict import (
    _Invalid,
    _judge,
    _NeedDatabase,
    _not_found,
    _Subject,
    _subject_of,
    _unauthenticated,
    _validated,
)

NOW = datetime(2030, 6, 1, 12, 0, tzinfo=UTC)
TENANT_BORN = incarnation(datetime(2030, 1, 1, tzinfo=UTC))
USER_BORN = incarnation(datetime(2030, 2, 1, tzinfo=UTC))

TENANT_TOKEN = _Subject("at", "tok-1", "tenant-1", None)
USER_TOKEN = _Subject("at", "tok-2", "tenant-1", "user-1")
USER_CREDENTIAL = _Subject("cc", "client-1", "tenant-1", "user-1")


def row_of(
    subject: _Subject,
    *,
    expires_at: datetime | None = None,
    filled_at: datetime = NOW,
    roles: tuple[str, ...] = ("admin",),
    permissions: tuple[str, ...] = ("read",),
) -> TokenRow:
    return TokenRow(
        tenant_id=subject.tenant_id,
        user_id=subject.user_id,
        tenant_incarnation=TENANT_BORN,
        user_incarnation=None if subject.user_id is None else USER_BORN,
        expires_us=None if expires_at is None else _microseconds(expires_at),
        roles=roles,
        permissions=permissions,
        filled_at=filled_at.timestamp(),
    )


def entries(
    subject: _Subject, row: Value | None = None, **overrides: Value | None
) -> dict[str, Value]:
    """Every entry the validation of `subject` reads, all saying "valid", but for `overrides`
    (keyed "env", "token", "tenant", "user"; None leaves the entry out: a cache miss)."""
    names = {"env": ENV_KEY, "token": subject.token_key, "tenant": _tenant_key(subject.tenant_id)}
    values: dict[str, Value | None] = {
        ENV_KEY: True,
        subject.token_key: row_of(subject) if row is None else row,
        names["tenant"]: Principal(TENANT_BORN, alive=True),
    }
    if subject.user_id is not None:
        names["user"] = _user_key(subject.user_id)
        values[names["user"]] = Principal(USER_BORN, alive=True)
    for name, value in overrides.items():
        values[names[name]] = value
    return {key: value for key, value in values.items() if value is not None}


def reason(subject: _Subject, values: Mapping[str, Value], *, final: bool = False) -> str:
    with pytest.raises(_Invalid) as raised:
        _judge(subject, values, NOW, final=final)
    return raised.value.reason


# --- valid ------------------------------------------------------------------------------------


def test_a_token_whose_entries_all_say_valid_is_valid_with_its_row() -> None:
    row = row_of(USER_TOKEN, expires_at=NOW + timedelta(hours=1))

    assert _judge(USER_TOKEN, entries(USER_TOKEN, row), NOW, final=False) == row


def test_an_access_token_speaks_with_the_roles_and_expiry_of_its_row() -> None:
    row = row_of(TENANT_TOKEN, expires_at=NOW + timedelta(hours=1), roles=("admin", "viewer"))
    claims = {"type": "tenantAccessToken", "sub": "tok-1", "tenantId": "tenant-1", "roles": ["x"]}

    answer = _validated(
        TENANT_TOKEN, claims, _judge(TENANT_TOKEN, entries(TENANT_TOKEN, row), NOW, final=True)
    )

    assert (answer.sub, answer.tenant_id, answer.user_id) == ("tok-1", "tenant-1", None)
    assert answer.roles == ("admin", "viewer")
    assert answer.permissions == ("read",)
    assert answer.expires_at == NOW + timedelta(hours=1)
    assert answer.is_access_token


def test_a_credential_speaks_with_the_claims_of_its_jwt_until_the_earlier_expiry() -> None:
    row = row_of(USER_CREDENTIAL, expires_at=NOW + timedelta(minutes=5))
    claims: dict[str, Any] = {
        "type": "userApiToken",
        "sub": "client-1",
        "tenantId": "tenant-1",
        "userId": "user-1",
        "roles": ["writer", 7],
        "permissions": ["write"],
        "exp": (NOW + timedelta(minutes=10)).timestamp(),
    }

    answer = _validated(USER_CREDENTIAL, claims, row)

    assert answer.roles == ("writer",)  # what is not a key is ignored
    assert answer.permissions == ("write",)
    assert answer.expires_at == NOW + timedelta(minutes=5)
    assert not answer.is_access_token


# --- invalid, definitely ----------------------------------------------------------------------


def test_an_expired_token_is_invalid_as_expired() -> None:
    row = row_of(USER_TOKEN, expires_at=NOW)

    assert reason(USER_TOKEN, entries(USER_TOKEN, row)) == "expired"
    error = _unauthenticated(_Invalid("expired"))
    assert isinstance(error, Unauthenticated)
    assert error.message == "Token expired"


def test_while_m2m_is_disabled_every_token_is_invalid_without_asking_the_database() -> None:
    values = entries(USER_TOKEN, env=False, token=None, tenant=None, user=None)

    assert reason(USER_TOKEN, values) == "disabled"
    error = _unauthenticated(_Invalid("disabled"))
    assert isinstance(error, Unauthenticated)
    assert error.message == "Api tokens are disabled"
    assert isinstance(_not_found("tok-2")(_Invalid("disabled")), Disabled)


def test_a_tombstoned_token_is_invalid_even_with_nothing_else_cached() -> None:
    values = entries(USER_TOKEN, token=DELETED, env=None, tenant=None, user=None)

    assert reason(USER_TOKEN, values) == "gone"


def test_a_token_of_a_deleted_user_is_invalid() -> None:
    values = entries(USER_TOKEN, user=Principal(USER_BORN, alive=False))

    assert reason(USER_TOKEN, values) == "gone"
    error = _unauthenticated(_Invalid("gone"))
    assert isinstance(error, Unauthenticated)
    assert error.message == "Token is not valid"


def test_a_token_of_a_deleted_tenant_is_invalid() -> None:
    values = entries(TENANT_TOKEN, tenant=Principal(TENANT_BORN, alive=False))

    assert reason(TENANT_TOKEN, values) == "gone"
    error = _not_found("tok-1")(_Invalid("gone"))
    assert isinstance(error, NotFound)
    assert error.message == "Access token tok-1 not found"


def test_a_token_whose_row_names_another_tenant_than_its_claims_is_invalid() -> None:
    other = _Subject("at", "tok-1", "tenant-2", None)

    assert reason(TENANT_TOKEN, entries(TENANT_TOKEN, row_of(other))) == "gone"


# --- unsettled: ask PostgreSQL ------------------------------------------------------------------


@pytest.mark.parametrize("missing", ["env", "token", "tenant", "user"])
def test_a_missing_entry_sends_the_question_to_the_database(missing: str) -> None:
    values = entries(USER_TOKEN, **{missing: None})

    with pytest.raises(_NeedDatabase):
        _judge(USER_TOKEN, values, NOW, final=False)
    assert reason(USER_TOKEN, values, final=True) == "gone"


def test_a_user_created_again_under_the_same_id_does_not_bring_back_the_old_ones_tokens() -> None:
    reborn = Principal(USER_BORN + 1, alive=True)
    values = entries(USER_TOKEN, user=reborn)

    with pytest.raises(_NeedDatabase):
        _judge(USER_TOKEN, values, NOW, final=False)
    assert reason(USER_TOKEN, values, final=True) == "gone"


def test_a_row_filled_longer_ago_than_its_lifetime_is_refilled_for_its_roles() -> None:
    stale = row_of(USER_TOKEN, filled_at=NOW - timedelta(seconds=ENTRY_TTL_SECONDS))

    with pytest.raises(_NeedDatabase):
        _judge(USER_TOKEN, entries(USER_TOKEN, stale), NOW, final=False)


# --- the claims -----------------------------------------------------------------------------------


def test_the_subject_of_a_user_token_names_its_row_tenant_and_user() -> None:
    claims = {"type": "userApiToken", "sub": "client-1", "tenantId": "tenant-1", "userId": "user-1"}

    assert _subject_of(claims) == USER_CREDENTIAL


def test_a_tenant_token_ignores_a_user_id_claim() -> None:
    claims = {"type": "tenantAccessToken", "sub": "tok-1", "tenantId": "tenant-1", "userId": "u"}

    assert _subject_of(claims) == TENANT_TOKEN


def test_a_user_token_without_its_user_is_not_valid() -> None:
    claims = {"type": "userAccessToken", "sub": "tok-2", "tenantId": "tenant-1"}

    with pytest.raises(Unauthenticated, match="Token is not valid"):
        _subject_of(claims)
