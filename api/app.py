"""create_app(settings): the Litestar app with its DI providers and exception handlers."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from litestar import Litestar
from litestar.di import Provide

from api.dependencies import provide_db_session, provide_now, provide_services
from api.errors import EXCEPTION_HANDLERS
from api.routes import configuration, directory, tokens, vendor
from api.state import Services
from domain.auth import EndUserVerifier, VendorAuthenticator
from domain.clock import utcnow
from domain.db import create_engine, create_session_factory
from domain.keys import MasterKey, ensure_signing_key
from domain.secrets import Argon2Parameters, SecretHasher
from domain.settings import Settings, load_settings


async def start_services(settings: Settings) -> Services:
    engine = create_engine(settings.database_url)
    sessions = create_session_factory(engine)
    master_key = MasterKey(settings.master_key)
    async with sessions() as session:
        signer = await ensure_signing_key(session, master_key, utcnow())
        await session.commit()
    end_users = (
        EndUserVerifier(
            public_key_pem=settings.user_jwt_public_key,
            jwks_url=settings.user_jwt_jwks_url,
            issuer=settings.user_jwt_issuer,
        )
        if settings.self_service_enabled
        else None
    )
    return Services(
        settings=settings,
        engine=engine,
        sessions=sessions,
        master_key=master_key,
        vendor=VendorAuthenticator(
            settings.vendor_client_id, settings.vendor_secret, master_key, settings.issuer
        ),
        end_users=end_users,
        hasher=SecretHasher(
            Argon2Parameters(
                time_cost=settings.argon2_time_cost,
                memory_kib=settings.argon2_memory_kib,
                parallelism=settings.argon2_parallelism,
            )
        ),
        signer=signer,
    )


def create_app(settings: Settings) -> Litestar:
    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        services = await start_services(settings)
        app.state.services = services
        try:
            yield
        finally:
            services.hasher.close()
            await services.engine.dispose()

    route_handlers: list[Any] = [
        *vendor.ROUTES,
        *configuration.ROUTES,
        *directory.ROUTES,
        *tokens.ROUTES,
    ]
    return Litestar(
        route_handlers=route_handlers,
        lifespan=[lifespan],
        dependencies={
            "services": Provide(provide_services, sync_to_thread=False),
            "db_session": Provide(provide_db_session),
            "now": Provide(provide_now, sync_to_thread=False),
        },
        exception_handlers=EXCEPTION_HANDLERS,
        request_max_body_size=settings.max_body_bytes,
        openapi_config=None,
        debug=False,
    )


def create_app_from_environment() -> Litestar:
    """Entry point for `m2m serve` workers: settings come from the environment."""
    return create_app(load_settings(os.environ, mode="serve"))
