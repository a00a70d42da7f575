"""The API reference: the OpenAPI 3.1 document of every API route (/schema/openapi.json and
.yaml) and its interactive page (/schema, Swagger UI served from here: no CDN).

Litestar's generator gives the paths, parameters and answers from the handlers' signatures; this
module adds what only the routes' declarations say: the body each route declares with
`reads(...)` (the struct `read_body` decodes with), the answers the house and OAuth error
handlers give (api/errors.py), who may call each route, and the Frontegg operation it mirrors.
"""

from __future__ import annotations

import copy
import json
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Final

import msgspec
import yaml
from litestar import Litestar, MediaType, Request, Response, Router, get
from litestar.datastructures import CacheControlHeader
from litestar.enums import OpenAPIMediaType
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import OpenAPIRenderPlugin
from litestar.routes import HTTPRoute

from api.errors import OAUTH_ERRORS, error_response
from api.schemas.common import (
    ANSWER_OPTION,
    BODY_MEDIA_TYPE_OPTION,
    FORM,
    JSON,
    PathId,
    declared_body,
)
from api.schemas.configuration import ConfigurationRequest
from api.schemas.directory import AddPermissionsBody, AddRolesBody, CreateTenantRequest
from api.schemas.events import EndpointChangeRequest, EndpointRequest
from api.schemas.exchange import ExchangeRequest, OAuthTokenForm, RefreshRequest
from api.schemas.leaks import LeakReportRequest
from api.schemas.policy import TokenPolicyRequest
from api.schemas.tokens import CreateTenantApiTokenBody, CreateUserApiTokenRequest, RotateRequest
from api.schemas.vendor import VendorAuthRequest
from domain import events
from domain.errors import NotFound
from domain.last_used import CLIENT_ADDRESS_HEADER
from domain.tokens import TENANT_HEADER, USER_HEADER

PATH: Final = "/schema"
JSON_DOCUMENT: Final = "/openapi.json"
YAML_DOCUMENT: Final = "/openapi.yaml"
ASSET: Final = "/assets/{name:str}"
WEB = Path(__file__).resolve().parent / "web" / "reference"
SWAGGER_UI = WEB / "vendor" / "swagger-ui"
MEDIA_TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8"}
# The page's assets, read once: a name is looked up here and never becomes a filesystem path.
ASSETS = {
    path.name: (path.read_bytes(), MEDIA_TYPES[path.suffix])
    for path in [*sorted(WEB.iterdir()), *sorted(SWAGGER_UI.iterdir())]
    if path.suffix in MEDIA_TYPES
}
REVALIDATE = CacheControlHeader(no_cache=True)


class ErrorOut(msgspec.Struct, kw_only=True, omit_defaults=True):
    """Every refusal, on every route: what went wrong, and sometimes a summary."""

    errors: list[str]
    message: str | None = None


class OAuthErrorOut(msgspec.Struct, kw_only=True):
    """A refusal on the OAuth routes: RFC 6749 / RFC 7009's members, and the house `errors`."""

    error: str
    error_description: str
    errors: list[str]


SECURITY_SCHEMES: Final[dict[str, dict[str, Any]]] = {
    "vendorToken": {
        "type": "apiKey",
        "in": "header",
        "name": "x-access-token",
        "description": "The vendor token POST /auth/vendor hands out.",
    },
    "vendorBearer": {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "JWT",
        "description": "The vendor token, in Authorization: Bearer.",
    },
    "endUserSession": {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "JWT",
        "description": "An end user's session JWT from the vendor's identity provider "
        "(M2M_USER_JWT_*): the user acts in its own account with the permissions its roles give.",
    },
    "accessTokenKey": {
        "type": "apiKey",
        "in": "header",
        "name": "X-API-KEY",
        "description": "A user or tenant access token, to validate.",
    },
    "clientCredentialBearer": {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "JWT",
        "description": "A JWT the exchange handed out for client credentials, to validate.",
    },
    "oauthClientBasic": {
        "type": "http",
        "scheme": "basic",
        "description": "An OAuth client: client id and secret (client_secret_basic). They may "
        "instead be posted in the form (client_secret_post).",
    },
}
# Who may call a route: any one of these (an empty one: anyone).
Security = list[dict[str, list[str]]]
VENDOR: Final[Security] = [{"vendorToken": []}, {"vendorBearer": []}]
VENDOR_OR_END_USER: Final[Security] = [*VENDOR, {"endUserSession": []}]
OAUTH_CLIENT: Final[Security] = [{"oauthClientBasic": []}, {}]
# The dependencies that authenticate a caller by a token (api/guards.py).
TOKEN_DEPENDENCIES: Final = frozenset({"caller", "vendor", "metrics_reader"})
# Routes whose callers are not told by their dependencies: (method, path) -> security.
SECURITY_BY_ROUTE: Final[dict[tuple[str, str], Security]] = {
    (
        "POST",
        "/identity/resources/auth/v1/validate",
    ): [{"accessTokenKey": []}, {"clientCredentialBearer": []}],
    ("POST", "/oauth/token"): OAUTH_CLIENT,
    ("POST", "/oauth/revoke"): OAUTH_CLIENT,
}

# The operation of Frontegg's identity API each route mirrors: (method, path) -> its operationId.
FRONTEGG_OPERATIONS: Final[dict[tuple[str, str], str]] = {
    ("POST", "/identity/resources/auth/v2/api-token"): (
        "AuthenticationApiTokenControllerV2_authApiToken"
    ),
    ("POST", "/identity/resources/auth/v2/api-token/token/refresh"): (
        "AuthenticationApiTokenControllerV2_refreshToken"
    ),
    ("POST", "/identity/resources/tenants/access-tokens/v1"): (
        "TenantAccessTokensV1Controller_createTenantAccessToken"
    ),
    ("GET", "/identity/resources/tenants/access-tokens/v1"): (
        "TenantAccessTokensV1Controller_getTenantAccessTokens"
    ),
    ("DELETE", "/identity/resources/tenants/access-tokens/v1/{}"): (
        "TenantAccessTokensV1Controller_deleteTenantAccessToken"
    ),
    ("POST", "/identity/resources/tenants/api-tokens/v1"): (
        "TenantApiTokensV1Controller_createTenantApiToken"
    ),
    ("GET", "/identity/resources/tenants/api-tokens/v1"): (
        "TenantApiTokensV1Controller_getTenantsApiTokens"
    ),
    ("DELETE", "/identity/resources/tenants/api-tokens/v1/{}"): (
        "TenantApiTokensV1Controller_deleteTenantApiToken"
    ),
    ("PATCH", "/identity/resources/tenants/api-tokens/v1/{}"): (
        "TenantApiTokensV1Controller_updateTenantApiToken"
    ),
    ("POST", "/identity/resources/tenants/api-tokens/v2"): (
        "TenantApiTokensV2Controller_createTenantApiToken"
    ),
    ("POST", "/identity/resources/users/access-tokens/v1"): (
        "UserAccessTokensV1Controller_createUserAccessToken"
    ),
    ("GET", "/identity/resources/users/access-tokens/v1"): (
        "UserAccessTokensV1Controller_getUserAccessTokens"
    ),
    ("DELETE", "/identity/resources/users/access-tokens/v1/{}"): (
        "UserAccessTokensV1Controller_deleteUserAccessToken"
    ),
    ("POST", "/identity/resources/users/api-tokens/v1"): (
        "UserApiTokensV1Controller_createTenantApiToken"
    ),
    ("GET", "/identity/resources/users/api-tokens/v1"): "UserApiTokensV1Controller_getApiTokens",
    ("DELETE", "/identity/resources/users/api-tokens/v1/{}"): (
        "UserApiTokensV1Controller_deleteApiToken"
    ),
    ("GET", "/identity/resources/vendor-only/users/access-tokens/v1/active"): (
        "VendorOnlyUserAccessTokensV1Controller_getActiveAccessTokens"
    ),
    ("GET", "/identity/resources/vendor-only/users/access-tokens/v1/{}"): (
        "VendorOnlyUserAccessTokensV1Controller_getUserAccessTokenData"
    ),
    ("GET", "/identity/resources/vendor-only/tenants/access-tokens/v1/{}"): (
        "VendorOnlyTenantAccessTokensV1Controller_getTenantAccessTokenData"
    ),
    ("POST", "/identity/resources/configurations/v1"): "VendorConfigController_addOrUpdateConfig",
    ("GET", "/identity/resources/configurations/v1"): "VendorConfigController_getVendorConfig",
    ("GET", "/identity/resources/configurations/v1/basic"): (
        "VendorConfigController_getVendorConfigBasic"
    ),
    ("GET", "/identity/resources/roles/v1"): "PermissionsControllerV1_getAllRoles",
    ("POST", "/identity/resources/roles/v1"): "PermissionsControllerV1_addRoles",
    ("DELETE", "/identity/resources/roles/v1/{}"): "PermissionsControllerV1_deleteRole",
    ("PATCH", "/identity/resources/roles/v1/{}"): "PermissionsControllerV1_updateRole",
    ("PUT", "/identity/resources/roles/v1/{}/permissions"): (
        "PermissionsControllerV1_setPermissionsToRole"
    ),
    ("GET", "/identity/resources/permissions/v1"): "PermissionsControllerV1_getAllPermissions",
    ("POST", "/identity/resources/permissions/v1"): "PermissionsControllerV1_addPermissions",
    ("DELETE", "/identity/resources/permissions/v1/{}"): (
        "PermissionsControllerV1_deletePermission"
    ),
    ("PATCH", "/identity/resources/permissions/v1/{}"): (
        "PermissionsControllerV1_updatePermission"
    ),
    ("POST", "/identity/resources/users/v2"): "UsersControllerV2_createUser",
    ("DELETE", "/identity/resources/users/v1/{}"): "UsersControllerV1_removeUserFromTenant",
    ("PUT", "/identity/resources/users/v1/{}"): "UsersControllerV1_updateUserForVendor",
    ("POST", "/identity/resources/users/v1/{}/roles"): "UsersControllerV1_addRolesToUser",
    ("DELETE", "/identity/resources/users/v1/{}/roles"): "UsersControllerV1_deleteRolesFromUser",
}

# Examples of the bodies, shown on the page and tried first by the fuzzing.
EXAMPLES: Final[dict[Any, Any]] = {
    VendorAuthRequest: {"clientId": "vendor-client-id", "secret": "the-vendor-secret"},
    ExchangeRequest: {"clientId": "3f1c…", "secret": "a1b2…"},
    RefreshRequest: {"refreshToken": "r-3f1c…"},
    CreateTenantRequest: {"tenantId": "acme", "name": "Acme Inc."},
    AddRolesBody: [
        {"key": "admin", "name": "Admin", "level": 1, "description": "Runs the account"}
    ],
    AddPermissionsBody: [{"key": "reports.read", "name": "Read reports"}],
    CreateUserApiTokenRequest: {"description": "CI deploys", "expiresInMinutes": 1440},
    # fe.secure.read.tenantApiTokens: built in, with the same id in every installation.
    CreateTenantApiTokenBody: {
        "description": "Billing sync",
        "permissionIds": ["5c99f17b-f9a7-587f-93d5-f831c50ddd04"],
    },
    ConfigurationRequest: {"apiTokensEnabled": True},
    OAuthTokenForm: {"grant_type": "client_credentials"},
    RotateRequest: {"overlapMinutes": 1440},
    TokenPolicyRequest: {
        "maxExpiresInMinutes": 90 * 1440,
        "requireExpiration": True,
        "maxRotationOverlapMinutes": 1440,
        "maxTokens": {"userApiToken": 5, "tenantAccessToken": 20},
    },
    LeakReportRequest: {
        "token": "m2m_cs_…",
        "url": "https://github.com/acme/deploy/blob/main/.env",
        "source": "internal-scanner",
    },
    EndpointRequest: {
        "url": "https://hooks.example.com/m2m",
        "eventTypes": [events.TOKEN_DELETED, events.TOKEN_LEAKED],
        "description": "Security team",
    },
    EndpointChangeRequest: {"eventTypes": [events.TOKEN_ROTATED], "enabled": True},
}

# Headers a route reads from the request itself rather than through a declared parameter.
HEADERS_BY_ROUTE: Final[dict[tuple[str, str], list[dict[str, Any]]]] = {
    ("POST", "/identity/resources/auth/v1/validate"): [
        {
            "name": CLIENT_ADDRESS_HEADER,
            "in": "header",
            "required": False,
            "schema": {"type": "string", "examples": ["203.0.113.7"]},
            "description": "The address the vendor's API saw its own caller come from: recorded "
            'with the access token\'s use (README "Last used"). A value that is no IP address '
            "records the use without an address.",
        }
    ],
}


def path_template(path: str) -> str:
    """A path with every parameter unnamed: `/users/v1/{userId}` and `{user_id}` agree."""
    parts = path.split("/")
    return "/".join("{}" if part.startswith("{") else part for part in parts)


def openapi_config() -> OpenAPIConfig:
    """Litestar's generator, serving our document and page under /schema."""
    return OpenAPIConfig(
        title="m2m-tokens",
        version=_version(),
        description="Machine-to-machine tokens, Frontegg's identity API as its users know it. "
        'Errors answer `{"errors": [...]}`; the OAuth routes also answer RFC 6749\'s '
        '`{"error", "error_description"}`.',
        path=PATH,
        render_plugins=[ReferencePage(), DocumentJson(), DocumentYaml()],
        openapi_router=Router(
            PATH, route_handlers=[], include_in_schema=False, after_request=_json_not_found
        ),
        create_examples=False,
    )


async def _json_not_found(response: Response[Any]) -> Response[Any]:
    """Litestar answers a path under /schema it does not know with an HTML page: every error
    of this service is JSON (api/errors.py)."""
    if response.status_code == 404 and response.media_type == MediaType.HTML:
        return error_response(404, ["Not Found"])
    return response


def _version() -> str:
    try:
        return version("m2m-tokens")
    except PackageNotFoundError:  # a checkout run without installing
        return "0"


def api_routes(app: Litestar) -> list[tuple[str, str, Any]]:
    """(method, path, handler) of every route the document describes: all but the web pages."""
    return [
        (method, route.path_format, handler)
        for route in app.routes
        if isinstance(route, HTTPRoute)
        for handler in route.route_handlers
        if handler.resolve_include_in_schema()
        for method in sorted(handler.http_methods)
        if method not in {"OPTIONS", "HEAD"}
    ]


def build_document(app: Litestar, generated: dict[str, Any]) -> dict[str, Any]:
    """Litestar's document of `app`, completed from the routes' declarations."""
    document = copy.deepcopy(generated)
    routes = api_routes(app)
    models: list[Any] = [ErrorOut, OAuthErrorOut]
    for _, _, handler in routes:
        for model in (declared_body(handler), handler.opt.get(ANSWER_OPTION)):
            if model is not None and model not in models:
                models.append(model)
    schemas, components = msgspec.json.schema_components(
        models, ref_template="#/components/schemas/{name}"
    )
    schema_of = dict(zip(models, schemas, strict=True))
    for _, _, handler in routes:
        if declared_body(handler) is not None:
            _without_nul(schema_of[declared_body(handler)], components, set())
            if handler.opt.get(BODY_MEDIA_TYPE_OPTION) == FORM:
                _form_fields(schema_of[declared_body(handler)], components)
    document.setdefault("components", {}).setdefault("schemas", {}).update(components)
    document["components"]["securitySchemes"] = SECURITY_SCHEMES
    tags: dict[str, str] = {}
    for method, path, handler in routes:
        operation = document["paths"][path][method.lower()]
        _describe(operation, method, path, handler, schema_of)
        # Grouped by feature: the route module's name, described by its docstring.
        module = sys.modules[handler.fn.__module__]
        feature = module.__name__.rsplit(".", 1)[-1]
        operation["tags"] = [feature]
        tags.setdefault(feature, (module.__doc__ or "").strip().split("\n\n")[0])
    document["tags"] = [{"name": name, "description": text} for name, text in sorted(tags.items())]
    return document


NO_NUL: Final = "^[^\\x00]*$"
# A value inside a body's free-form object (metadata): any JSON, its strings without NUL.
FREE_VALUE: Final = {
    "anyOf": [
        {"type": "string", "pattern": NO_NUL},
        {"type": ["number", "boolean", "null", "array"]},
        {"type": "object", "propertyNames": {"pattern": NO_NUL}},
    ]
}


def _form_fields(schema: dict[str, Any], components: dict[str, Any]) -> None:
    """A form's fields beyond those named are kept and ignored, each given once, as a string
    (api/schemas/exchange.py `read_form`)."""
    for member in [schema, *schema.get("anyOf", []), *schema.get("oneOf", [])]:
        reference = member.get("$ref")
        if isinstance(reference, str):
            target = components[reference.rsplit("/", 1)[1]]
            target["additionalProperties"] = {"type": "string", "pattern": NO_NUL}
            target["propertyNames"] = {"pattern": NO_NUL}


def _without_nul(schema: Any, components: dict[str, Any], seen: set[str]) -> None:
    """States in a body's schema what every body refuses (api/schemas/common.py `Body`): a NUL
    in any string or key."""
    if isinstance(schema, list):
        for item in schema:
            _without_nul(item, components, seen)
        return
    if not isinstance(schema, dict):
        return
    reference = schema.get("$ref")
    if isinstance(reference, str):
        name = reference.rsplit("/", 1)[1]
        if name in components and name not in seen:
            seen.add(name)
            _without_nul(components[name], components, seen)
    if schema.get("type") == "string" and not {"enum", "const", "pattern"} & set(schema):
        schema["pattern"] = NO_NUL
    if schema.get("type") == "object" and "properties" not in schema:
        schema.setdefault("propertyNames", {"pattern": NO_NUL})
        schema.setdefault("additionalProperties", copy.deepcopy(FREE_VALUE))
    for key in ("properties", "$defs"):
        for child in (schema.get(key) or {}).values():
            _without_nul(child, components, seen)
    for key in ("items", "anyOf", "oneOf", "allOf", "then", "if"):
        if key in schema:
            _without_nul(schema[key], components, seen)


def _describe(
    operation: dict[str, Any],
    method: str,
    path: str,
    handler: Any,
    schema_of: dict[type[Any], Any],
) -> None:
    body = declared_body(handler)
    if body is not None:
        media_type = handler.opt.get(BODY_MEDIA_TYPE_OPTION, JSON)
        content: dict[str, Any] = {"schema": schema_of[body]}
        if body in EXAMPLES:
            content["example"] = EXAMPLES[body]
        operation["requestBody"] = {"required": True, "content": {media_type: content}}
    answer = handler.opt.get(ANSWER_OPTION)
    if answer is not None:
        success = next(code for code in operation["responses"] if code.startswith("2"))
        operation["responses"][success]["content"] = {JSON: {"schema": schema_of[answer]}}
    dependencies = handler.resolve_dependencies()
    operation.setdefault("parameters", []).extend(
        copy.deepcopy(HEADERS_BY_ROUTE.get((method, path), []))
    )
    if not operation["parameters"]:
        del operation["parameters"]
    _describe_headers(operation, dependencies)
    security = SECURITY_BY_ROUTE.get((method, path))
    if security is None:
        if "caller" in dependencies:
            security = VENDOR_OR_END_USER
        elif "metrics_reader" in dependencies:
            security = [*VENDOR, {}]  # anyone when M2M_METRICS_PUBLIC is true
        elif "vendor" in dependencies:
            security = VENDOR
        else:
            security = []
    operation["security"] = security
    oauth = handler.exception_handlers == OAUTH_ERRORS
    error_schema = schema_of[OAuthErrorOut if oauth else ErrorOut]
    responses = {
        code: answer_
        for code, answer_ in operation["responses"].items()
        if not code.startswith(("4", "5"))
    }
    for code, description in _refusals(method, path, handler, security, body).items():
        responses[code] = _error_response(description, error_schema, code in {"429", "503"})
    operation["responses"] = responses
    frontegg = FRONTEGG_OPERATIONS.get((method, path_template(path)))
    if frontegg is not None:
        operation["x-frontegg-operation"] = frontegg
        operation["description"] = (
            f"Frontegg's `{frontegg}`. " + operation.get("description", "")
        ).strip()


ACTING_HEADERS: Final = {
    TENANT_HEADER: "The account the vendor acts in: required when the vendor calls, ignored for "
    "an end user (its session names its account).",
    USER_HEADER: "The user the vendor acts for, on the user-token routes: required when the "
    "vendor calls them, ignored for an end user.",
}


def _describe_headers(operation: dict[str, Any], dependencies: dict[str, Any]) -> None:
    """A header is a string, never null; frontegg-tenant-id is required of the vendor: always on
    the vendor-only routes that act in a tenant, and on the token routes when the vendor calls
    (an end user's session names its own account)."""
    for parameter in operation.get("parameters", []):
        if parameter["in"] != "header":
            continue
        schema = parameter["schema"]
        if "oneOf" in schema:
            schema.pop("oneOf")
            schema["type"] = "string"
        if parameter["name"] == TENANT_HEADER and "tenant_id" in dependencies:
            parameter["required"] = True  # the vendor-only routes that act in an account
        elif parameter["name"] in ACTING_HEADERS and "acting" in dependencies:
            parameter["description"] = ACTING_HEADERS[parameter["name"]]


def _refusals(
    method: str, path: str, handler: Any, security: list[Any], body: type[Any] | None
) -> dict[str, str]:
    """The refusals a route may answer, by what it takes: every route answers 400 on a
    malformed request and 503 while PostgreSQL cannot answer."""
    refusals = {"400": "The request is malformed or a value is out of its bounds."}
    if body is not None:
        refusals["413"] = "The body is larger than M2M_MAX_BODY_BYTES."
    if security or body is not None:
        refusals["401"] = "Missing, invalid or expired credentials."
        refusals["403"] = "The caller may not do this."
    if "{" in path or security:
        refusals["404"] = "What the request names does not exist (for this caller)."
    if security and method in {"POST", "PUT", "PATCH", "DELETE"}:
        refusals["409"] = (
            "It conflicts with what exists (a key or an id taken) or with the state of what it"
            " names (ending a rotation's overlap when none runs)."
        )
    if handler.opt.get("carries_secret") and not TOKEN_DEPENDENCIES & set(
        handler.resolve_dependencies()
    ):
        refusals["429"] = "Too many attempts: come back after Retry-After seconds."
    refusals["503"] = "PostgreSQL (or Redis where needed) cannot answer now: retry after."
    return dict(sorted(refusals.items()))


def _error_response(description: str, schema: Any, retry_after: bool) -> dict[str, Any]:
    response: dict[str, Any] = {"description": description, "content": {JSON: {"schema": schema}}}
    if retry_after:
        response["headers"] = {
            "Retry-After": {"schema": {"type": "string"}, "description": "Seconds to wait."}
        }
    return response


# --- serving ----------------------------------------------------------------------------------


def document_of(app: Litestar) -> dict[str, Any]:
    return build_document(app, app.openapi_schema.to_schema())


class DocumentJson(OpenAPIRenderPlugin):
    """The document as JSON, built on first request (each app has its own plugins)."""

    def __init__(self) -> None:
        super().__init__(path=JSON_DOCUMENT, media_type=OpenAPIMediaType.OPENAPI_JSON)
        self.rendered: bytes | None = None

    def render(self, request: Request[Any, Any, Any], openapi_schema: dict[str, Any]) -> bytes:
        if self.rendered is None:
            self.rendered = json.dumps(document_of(request.app), ensure_ascii=False).encode()
        return self.rendered


class DocumentYaml(OpenAPIRenderPlugin):
    """The same document as YAML."""

    def __init__(self) -> None:
        super().__init__(path=YAML_DOCUMENT, media_type=OpenAPIMediaType.OPENAPI_YAML)
        self.rendered: bytes | None = None

    def render(self, request: Request[Any, Any, Any], openapi_schema: dict[str, Any]) -> bytes:
        if self.rendered is None:
            document = document_of(request.app)
            self.rendered = yaml.safe_dump(document, sort_keys=False, allow_unicode=True).encode()
        return self.rendered


class ReferencePage(OpenAPIRenderPlugin):
    """Swagger UI, from the copy this service ships, started by our own script (the page's CSP
    allows no inline script)."""

    def __init__(self) -> None:
        super().__init__(path="/", media_type=MediaType.HTML)
        self.page = (WEB / "index.html").read_bytes()

    def render(self, request: Request[Any, Any, Any], openapi_schema: dict[str, Any]) -> bytes:
        return self.page

    def receive_router(self, router: Router) -> None:
        router.register(reference_asset)


@get(ASSET, cache_control=REVALIDATE, include_in_schema=False, sync_to_thread=False)
def reference_asset(name: PathId) -> Response[bytes]:
    if name not in ASSETS:
        raise NotFound(f"No reference asset {name}")
    content, media_type = ASSETS[name]
    return Response(content, media_type=media_type)
