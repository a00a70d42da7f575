"""GET/POST /identity/resources/configurations/v1 and GET .../v1/basic: environment settings."""

from __future__ import annotations

from typing import Any

from litestar import Request, get, post

from api.dependencies import CallerDep, NowDep, ServicesDep, SessionDep
from api.guards import VENDOR_ONLY, VENDOR_OR_MEMBER
from api.schemas.common import read_body, reads
from api.schemas.configuration import (
    ConfigurationBasicOut,
    ConfigurationRequest,
    configuration_basic_response,
    configuration_response,
)
from api.transaction import commit
from domain.configuration import ConfigurationChange, get_environment, update_configuration

PATH = "/identity/resources/configurations/v1"
BASIC = PATH + "/basic"


@get(PATH, dependencies=VENDOR_ONLY)
async def get_configuration(
    vendor: CallerDep, db_session: SessionDep, services: ServicesDep
) -> dict[str, Any]:
    environment = await get_environment(db_session)
    return configuration_response(environment, services.signer.public_key_pem)


@post(PATH, dependencies=VENDOR_ONLY, status_code=201, opt=reads(ConfigurationRequest))
async def update_configuration_route(
    request: Request[Any, Any, Any],
    vendor: CallerDep,
    db_session: SessionDep,
    services: ServicesDep,
    now: NowDep,
) -> dict[str, Any]:
    data: ConfigurationRequest = await read_body(request)
    change = ConfigurationChange(
        api_tokens_enabled=data.api_tokens_enabled,
        m2m_strategy=data.machine_to_machine_auth_strategy,
        default_token_expiration=data.default_token_expiration,
        default_refresh_token_expiration=data.default_refresh_token_expiration,
        extra=data.extra(),
    )
    environment, after = await update_configuration(db_session, vendor, change, now)
    await commit(db_session, services, after)
    return configuration_response(environment, services.signer.public_key_pem)


# Frontegg's pages read this with a member's session as well as the vendor's token.
@get(BASIC, dependencies=VENDOR_OR_MEMBER)
async def get_basic_configuration(
    caller: CallerDep, db_session: SessionDep
) -> ConfigurationBasicOut:
    return configuration_basic_response(await get_environment(db_session))


ROUTES = [get_configuration, update_configuration_route, get_basic_configuration]
