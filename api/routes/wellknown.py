"""Discovery: JWKS (every published signing key) and RFC 8414 authorization server metadata."""

from __future__ import annotations

from typing import Any

from litestar import get

from api.dependencies import ServicesDep

JWKS = "/.well-known/jwks.json"


@get(JWKS, cache_control=None)
async def jwks(services: ServicesDep) -> dict[str, Any]:
    return services.keyring.jwks


@get("/.well-known/oauth-authorization-server")
async def authorization_server_metadata(services: ServicesDep) -> dict[str, Any]:
    """The endpoints are named under the address served (`m2m dev`: its port now), else under
    the issuer: never under the request's Host, which the client chooses."""
    issuer = services.settings.issuer
    base = (services.settings.served_url or issuer).rstrip("/")
    return {
        "issuer": issuer,
        "token_endpoint": f"{base}/oauth/token",
        "introspection_endpoint": f"{base}/oauth/introspect",
        "revocation_endpoint": f"{base}/oauth/revoke",
        "jwks_uri": f"{base}{JWKS}",
        "grant_types_supported": ["client_credentials", "refresh_token"],
        "response_types_supported": [],
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
        "revocation_endpoint_auth_methods_supported": [
            "client_secret_basic",
            "client_secret_post",
        ],
        "introspection_endpoint_auth_methods_supported": ["bearer"],
        "token_endpoint_auth_signing_alg_values_supported": ["RS256"],
    }


ROUTES = [jwks, authorization_server_metadata]
