"""/identity/resources/tenants/token-policy/v1: an account's token policy, read and replaced."""

from __future__ import annotations

from typing import Any

from litestar import Request, get, put

from api.dependencies import ActingDep, CallerDep, NowDep, ServicesDep, SessionDep
from api.guards import CALLER
from api.schemas.common import read_body, reads
from api.schemas.policy import (
    SetTokenPolicyOut,
    TokenPolicyOut,
    TokenPolicyRequest,
    set_token_policy_response,
    token_policy_response,
)
from api.transaction import commit
from domain import tokens

TOKEN_POLICY = "/identity/resources/tenants/token-policy/v1"


@get(TOKEN_POLICY, dependencies=CALLER)
async def get_token_policy(
    caller: CallerDep, acting: ActingDep, db_session: SessionDep
) -> TokenPolicyOut:
    tenant_id, policy = await tokens.get_token_policy(db_session, caller, acting)
    return token_policy_response(tenant_id, policy)


@put(TOKEN_POLICY, dependencies=CALLER, status_code=200, opt=reads(TokenPolicyRequest))
async def set_token_policy(
    request: Request[Any, Any, Any],
    caller: CallerDep,
    acting: ActingDep,
    db_session: SessionDep,
    services: ServicesDep,
    now: NowDep,
) -> SetTokenPolicyOut:
    data: TokenPolicyRequest = await read_body(request)
    tenant_id, policy, exceeding = await tokens.set_token_policy(
        db_session, caller, acting, data.to_policy(), now
    )
    await commit(db_session, services)
    return set_token_policy_response(tenant_id, policy, exceeding)


ROUTES = [get_token_policy, set_token_policy]
