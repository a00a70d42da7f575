"""POST /auth/vendor: the environment's credentials for a vendor token."""

from __future__ import annotations

from typing import Any

from litestar import Request, post

from api.dependencies import ClientAddressDep, NowDep, ServicesDep
from api.schemas.common import read_body, reads
from api.schemas.vendor import VendorAuthOut, VendorAuthRequest
from api.security_headers import CARRIES_SECRET


@post("/auth/vendor", status_code=200, opt=reads(VendorAuthRequest, CARRIES_SECRET))
async def authenticate_vendor(
    request: Request[Any, Any, Any],
    services: ServicesDep,
    now: NowDep,
    client_address: ClientAddressDep,
) -> VendorAuthOut:
    data: VendorAuthRequest = await read_body(request)
    token, expires_in = await services.vendor.authenticate(
        services.limiter, data.client_id, data.secret, address=client_address, now=now
    )
    return VendorAuthOut(token=token, expires_in=expires_in)


ROUTES = [authenticate_vendor]
