"""The service's HTTP API as the benchmark uses it: the directory and tokens it needs."""

from __future__ import annotations

from typing import Any

import httpx

EXCHANGE = "/identity/resources/auth/v2/api-token"
REFRESH = "/identity/resources/auth/v2/api-token/token/refresh"
VALIDATE = "/identity/resources/auth/v1/validate"
ACTIVE = "/identity/resources/vendor-only/tenants/access-tokens/v1/active"
CONFIGURATION = "/identity/resources/configurations/v1"


class RouteMissing(Exception):
    """The route answered 404/405: not built yet. Reported as "not available"."""


class RouteFailed(Exception):
    """The route answered something else than expected."""


def expect(response: httpx.Response, *statuses: int) -> Any:
    """The JSON body of an expected answer; RouteMissing or RouteFailed otherwise."""
    if response.status_code in statuses:
        return response.json() if response.content else None
    where = f"{response.request.method} {response.request.url.path}"
    if response.status_code in (404, 405):
        raise RouteMissing(f"{where} answered {response.status_code}")
    raise RouteFailed(f"{where} answered {response.status_code}: {response.text[:300]}")


class ServiceClient:
    """Vendor calls to the service under test, one at a time (setup only, never load)."""

    def __init__(self, base_url: str, tenant_id: str) -> None:
        self.base_url = base_url
        self.tenant_id = tenant_id
        self.http = httpx.Client(base_url=base_url, timeout=60)
        self.vendor_token = ""

    def close(self) -> None:
        self.http.close()

    @property
    def vendor_headers(self) -> dict[str, str]:
        return {"x-access-token": self.vendor_token}

    @property
    def tenant_headers(self) -> dict[str, str]:
        return {**self.vendor_headers, "frontegg-tenant-id": self.tenant_id}

    def authenticate_vendor(self, client_id: str, secret: str) -> None:
        body = {"clientId": client_id, "secret": secret}
        self.vendor_token = expect(self.http.post("/auth/vendor", json=body), 200)["token"]

    def create_tenant(self) -> None:
        body = {"tenantId": self.tenant_id, "name": "Bench"}
        expect(
            self.http.post("/tenants/resources/tenants/v1", json=body, headers=self.vendor_headers),
            200,
            201,
        )

    def create_role(self) -> str:
        body = [{"key": "bench", "name": "Bench", "level": 1}]
        roles = expect(
            self.http.post("/identity/resources/roles/v1", json=body, headers=self.vendor_headers),
            200,
            201,
        )
        return str(roles[0]["id"])

    def set_strategy(self, strategy: str) -> None:
        body = {"machineToMachineAuthStrategy": strategy}
        expect(self.http.post(CONFIGURATION, json=body, headers=self.vendor_headers), 200, 201)

    def create_client_credential(self, role_id: str) -> tuple[str, str]:
        """A tenant client credential: (clientId, secret)."""
        created = expect(
            self.http.post(
                "/identity/resources/tenants/api-tokens/v2",
                json={"description": "bench", "roleIds": [role_id]},
                headers=self.tenant_headers,
            ),
            201,
        )
        return str(created["clientId"]), str(created["secret"])

    def create_access_token(self) -> str:
        """A tenant access token (the JWT sent as X-API-KEY)."""
        created = expect(
            self.http.post(
                "/identity/resources/tenants/access-tokens/v1",
                json={"description": "bench"},
                headers=self.tenant_headers,
            ),
            201,
        )
        return str(created["secret"])

    def exchange(self, client_id: str, secret: str) -> dict[str, Any]:
        """{access_token, refresh_token, expires_in, expires}."""
        body = {"clientId": client_id, "secret": secret}
        answer: dict[str, Any] = expect(self.http.post(EXCHANGE, json=body), 200, 201)
        return answer

    def refresh(self, refresh_token: str) -> dict[str, Any]:
        body = {"refreshToken": refresh_token}
        answer: dict[str, Any] = expect(self.http.post(REFRESH, json=body), 200, 201)
        return answer

    def validate(self, headers: dict[str, str]) -> dict[str, Any]:
        answer: dict[str, Any] = expect(self.http.post(VALIDATE, headers=headers), 200)
        return answer

    def active_ids(self, *, gzip: bool = False) -> tuple[list[str], int]:
        """The ids `/active` answers, and the size of that answer in bytes as sent."""
        encoding = {"Accept-Encoding": "gzip" if gzip else "identity"}
        response = self.http.get(ACTIVE, headers={**self.vendor_headers, **encoding})
        ids: list[str] = expect(response, 200)
        return ids, int(response.headers.get("content-length", len(response.content)))
