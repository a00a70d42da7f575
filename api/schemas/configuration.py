"""Environment configuration shapes (Frontegg's VendorConfigRequest / VendorConfigResponse)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec

from api.schemas.common import Body, Out
from domain.configuration import extra_settings
from domain.exchange import REFRESH_TOKENS_ROTATION_LIMIT
from domain.models import Environment

Seconds = Annotated[int, msgspec.Meta(ge=1, le=2_592_000)]
RefreshSeconds = Annotated[int, msgspec.Meta(ge=60, le=15_552_000)]
PasswordlessSeconds = Annotated[int, msgspec.Meta(ge=60, le=2_592_000)]


class ConfigurationRequest(Body):
    api_tokens_enabled: bool | None = None
    machine_to_machine_auth_strategy: Literal["ClientCredentials", "AccessToken"] | None = None
    default_token_expiration: Seconds | None = None
    default_refresh_token_expiration: RefreshSeconds | None = None
    # Accepted and echoed for Frontegg clients; none of these changes what this service does.
    cookie_same_site: Literal["STRICT", "LAX", "NONE"] | None = None
    allow_signups: bool | None = None
    allow_override_password_complexity: bool | None = None
    allow_override_password_expiration: bool | None = None
    allow_override_enforce_password_history: bool | None = None
    jwt_algorithm: Literal["RS256"] | None = None
    allow_not_verified_users_login: bool | None = None
    force_permissions: bool | None = None
    add_saml_attributes_to_jwt: bool | None = None
    auth_strategy: (
        Literal["Code", "EmailAndPassword", "MagicLink", "NoLocalAuthentication", "SmsCode"] | None
    ) = None
    default_passwordless_token_expiration: PasswordlessSeconds | None = None
    force_same_device_on_auth: bool | None = None
    allow_tenant_invitations: bool | None = None
    rotate_refresh_tokens: bool | None = None
    skip_tenant_validation: bool | None = None
    add_roles_to_jwt: bool | None = None
    add_permissions_to_jwt: bool | None = None
    allow_custom_login_tenant_switch: bool | None = None

    MODELLED = frozenset(
        {
            "api_tokens_enabled",
            "machine_to_machine_auth_strategy",
            "default_token_expiration",
            "default_refresh_token_expiration",
        }
    )

    def extra(self) -> dict[str, Any]:
        """The echoed-only fields that were sent, under their Frontegg names."""
        return {
            encoded: getattr(self, field)
            for field, encoded in zip(
                self.__struct_fields__, self.__struct_encode_fields__, strict=True
            )
            if field not in self.MODELLED and getattr(self, field) is not None
        }


def configuration_response(environment: Environment, public_key_pem: str) -> dict[str, Any]:
    extra = extra_settings(environment)
    extra.pop("skipTenantValidation", None)
    return {
        "id": str(environment.id),
        "apiTokensEnabled": environment.api_tokens_enabled,
        "machineToMachineAuthStrategy": environment.m2m_strategy,
        "defaultTokenExpiration": environment.default_token_expiration,
        "defaultRefreshTokenExpiration": environment.default_refresh_token_expiration,
        "refreshTokensRotationLimit": REFRESH_TOKENS_ROTATION_LIMIT,
        "publicKey": public_key_pem,
        **extra,
    }


class ConfigurationBasicOut(Out):
    """Frontegg's VendorConfigBasicResponse: what a member's page needs to know."""

    force_permissions: bool
    machine_to_machine_auth_strategy: str


def configuration_basic_response(environment: Environment) -> ConfigurationBasicOut:
    return ConfigurationBasicOut(
        force_permissions=bool(extra_settings(environment)["forcePermissions"]),
        machine_to_machine_auth_strategy=environment.m2m_strategy,
    )
