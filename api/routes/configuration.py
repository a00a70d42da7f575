"""GET/POST /identity/resources/configurations/v1: the environment settings."""

from __future__ import annotations

from typing import Any

from litestar import Request, get, post

from api.dependencies import CallerDep, NowDep, ServicesDep, SessionDep
from api.guards import VENDOR_ONLY
from api.schemas.common import read_body
from api.schemas.configuration import ConfigurationRequest, configuration_response
from domain.configuration import ConfigurationChange, get_environment, update_configuration
from domain.jobs import PROPAGATE_M2M_SWITCH

PATH = "/identity/resources/configurations/v1"


@get(PATH, dependencies=VENDOR_ONLY)
async def get_configuration(
    vendor: CallerDep, db_session: SessionDep, services: ServicesDep
) -> dict[str, Any]:
    environment = await get_environment(db_session)
    return configuration_response(environment, services.signer.public_key_pem)


@post(PATH, dependencies=VENDOR_ONLY, status_code=201)
async def update_configuration_route(
    request: Request[Any, Any, Any],
    vendor: CallerDep,
    db_session: SessionDep,
    services: ServicesDep,
    now: NowDep,
) -> dict[str, Any]:
    data = await read_body(request, ConfigurationRequest)
    change = ConfigurationChange(
        api_tokens_enabled=data.api_tokens_enabled,
        m2m_strategy=data.machine_to_machine_auth_strategy,
        default_token_expiration=data.default_token_expiration,
        default_refresh_token_expiration=data.default_refresh_token_expiration,
        extra=data.extra(),
    )
    environment = await update_configuration(db_session, vendor, change, now)
    await db_session.commit()
    if data.api_tokens_enabled is not None:
        # In effect on this process before the response, on every other within 100 ms.
        await services.validity.switch_api_tokens(environment.api_tokens_enabled)
        # Brings every process and the whole cache in line, and records that it did.
        await services.jobs.enqueue(PROPAGATE_M2M_SWITCH)
    return configuration_response(environment, services.signer.public_key_pem)


ROUTES = [get_configuration, update_configuration_route]
