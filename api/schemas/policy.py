"""Account token policy shapes: the policy as set and read, and what lies outside it."""

from __future__ import annotations

from typing import Annotated

import msgspec

from api.schemas.common import Body, Out, iso
from domain.policy import (
    MAX_EXPIRES_IN_MINUTES,
    MAX_ROTATION_OVERLAP_MINUTES,
    MAX_TOKENS_LIMIT,
    Exceeding,
    Policy,
)


def _within(low: int, high: int) -> msgspec.Meta:
    """The range the API reference states; the route checks it with the policy's own message."""
    return msgspec.Meta(extra_json_schema={"minimum": low, "maximum": high})


Most = Annotated[int, _within(0, MAX_TOKENS_LIMIT)]


class MaxTokensBody(Body):
    """The most tokens of each kind; absent or null: no limit."""

    user_api_token: Most | None = None
    tenant_api_token: Most | None = None
    user_access_token: Most | None = None
    tenant_access_token: Most | None = None


class TokenPolicyRequest(Body):
    """The whole policy (PUT replaces it); absent or null limits are no limit. Ranges are
    checked once, in domain.policy."""

    max_expires_in_minutes: Annotated[int, _within(1, MAX_EXPIRES_IN_MINUTES)] | None = None
    require_expiration: bool = False
    max_rotation_overlap_minutes: (
        Annotated[int, _within(0, MAX_ROTATION_OVERLAP_MINUTES)] | None
    ) = None
    max_tokens: MaxTokensBody = msgspec.field(default_factory=MaxTokensBody)

    def to_policy(self) -> Policy:
        return Policy(
            max_expires_in_minutes=self.max_expires_in_minutes,
            require_expiration=self.require_expiration,
            max_rotation_overlap_minutes=self.max_rotation_overlap_minutes,
            max_tokens={
                "userApiToken": self.max_tokens.user_api_token,
                "tenantApiToken": self.max_tokens.tenant_api_token,
                "userAccessToken": self.max_tokens.user_access_token,
                "tenantAccessToken": self.max_tokens.tenant_access_token,
            },
        )


class MaxTokensOut(Out):
    user_api_token: int | None
    tenant_api_token: int | None
    user_access_token: int | None
    tenant_access_token: int | None


class TokenPolicyOut(Out):
    tenant_id: str
    max_expires_in_minutes: int | None
    require_expiration: bool
    max_rotation_overlap_minutes: int | None
    max_tokens: MaxTokensOut
    updated_at: str | None


class ExceedingOut(Out):
    """A token outside the policy (`tokenId`, `expires`), or an owner over a kind's cap
    (`count`); `userId` names the user of personal tokens."""

    rule: str
    kind: str
    user_id: str | None
    token_id: str | None
    expires: str | None
    count: int | None


class SetTokenPolicyOut(TokenPolicyOut):
    exceeding: list[ExceedingOut]


def token_policy_response(tenant_id: str, policy: Policy) -> TokenPolicyOut:
    return TokenPolicyOut(
        tenant_id=tenant_id,
        max_expires_in_minutes=policy.max_expires_in_minutes,
        require_expiration=policy.require_expiration,
        max_rotation_overlap_minutes=policy.max_rotation_overlap_minutes,
        max_tokens=MaxTokensOut(
            user_api_token=policy.most_tokens("userApiToken"),
            tenant_api_token=policy.most_tokens("tenantApiToken"),
            user_access_token=policy.most_tokens("userAccessToken"),
            tenant_access_token=policy.most_tokens("tenantAccessToken"),
        ),
        updated_at=iso(policy.updated_at),
    )


def set_token_policy_response(
    tenant_id: str, policy: Policy, exceeding: list[Exceeding]
) -> SetTokenPolicyOut:
    return SetTokenPolicyOut(
        **{
            name: getattr(token_policy_response(tenant_id, policy), name)
            for name in TokenPolicyOut.__struct_fields__
        },
        exceeding=[
            ExceedingOut(
                rule=item.rule,
                kind=item.kind,
                user_id=item.user_id,
                token_id=item.token_id,
                expires=iso(item.expires_at),
                count=item.count,
            )
            for item in exceeding
        ],
    )
