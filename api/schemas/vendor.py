"""Vendor authentication shapes."""

from __future__ import annotations

from typing import Annotated

import msgspec

from api.schemas.common import Body, Out

Credential = Annotated[str, msgspec.Meta(max_length=1024)]


class VendorAuthRequest(Body):
    client_id: Credential
    secret: Credential


class VendorAuthOut(Out):
    token: str
    expires_in: int
