"""POST /auth/vendor: the environment's credentials for a vendor token."""

from __future__ import annotations

from litestar import post
from litestar.params import JSONBody

from api.dependencies import NowDep, ServicesDep
from api.schemas.vendor import VendorAuthRequest, VendorAuthResponse


@post("/auth/vendor", status_code=200)
async def authenticate_vendor(
    data: JSONBody[VendorAuthRequest], services: ServicesDep, now: NowDep
) -> VendorAuthResponse:
    token, expires_in = services.vendor.authenticate(data.client_id, data.secret, now)
    return VendorAuthResponse(token=token, expires_in=expires_in)


ROUTES = [authenticate_vendor]
