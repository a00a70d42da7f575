"""The portal's response shapes: the signed-in user, and the members behind "Created by"."""

from __future__ import annotations

from api.schemas.common import Out
from api.schemas.policy import TokenPolicyOut, token_policy_response
from domain.portal import Member, PortalSession


class HeldRoleOut(Out):
    id: str
    key: str
    name: str


class PortalSessionOut(Out):
    user_id: str
    tenant_id: str
    email: str
    name: str | None
    tenant_name: str
    roles: list[HeldRoleOut]
    permissions: list[str]
    api_tokens_enabled: bool
    machine_to_machine_auth_strategy: str
    token_policy: TokenPolicyOut


class MemberOut(Out):
    user_id: str
    name: str | None
    email: str


def portal_session_response(portal: PortalSession) -> PortalSessionOut:
    return PortalSessionOut(
        user_id=portal.user_id,
        tenant_id=portal.tenant_id,
        email=portal.email,
        name=portal.name,
        tenant_name=portal.tenant_name,
        roles=[HeldRoleOut(id=role.id, key=role.key, name=role.name) for role in portal.roles],
        permissions=portal.permissions,
        api_tokens_enabled=portal.api_tokens_enabled,
        machine_to_machine_auth_strategy=portal.strategy,
        token_policy=token_policy_response(portal.tenant_id, portal.token_policy),
    )


def member_response(member: Member) -> MemberOut:
    return MemberOut(user_id=member.user_id, name=member.name, email=member.email)
