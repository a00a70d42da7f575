"""Exchange, refresh and OAuth 2.0 shapes: Frontegg's JSON bodies, RFC 6749 forms and responses."""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Annotated, Any
from urllib.parse import parse_qsl, unquote_plus

import msgspec
from litestar import Request

from api.schemas.common import Body, Out, iso
from domain.errors import InvalidInput
from domain.exchange import ClientSecret, InvalidClient, TokenPair

# clientId, secret and refresh tokens: ours are far shorter; anything longer is not one of them.
MAX_CREDENTIAL = 1024
MAX_FORM_FIELDS = 32
FORM_CONTENT_TYPE = "application/x-www-form-urlencoded"
BEARER = "Bearer"

Credential = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_CREDENTIAL)]


# --- Frontegg JSON bodies --------------------------------------------------------------------


class ExchangeRequest(Body):
    """AuthApiTokenDto."""

    client_id: Credential
    secret: Credential

    @property
    def presented(self) -> ClientSecret:
        return ClientSecret(client_id=self.client_id, secret=self.secret)


class RefreshRequest(Body):
    """RefreshApiTokenDto."""

    refresh_token: Credential


# --- OAuth 2.0 forms: what the API reference says of them (read_form parses the body itself) ---


class ClientCredentialsForm(
    msgspec.Struct, kw_only=True, tag_field="grant_type", tag="client_credentials"
):
    """RFC 6749 client_credentials: the client authenticates by HTTP Basic, or by client_id and
    client_secret here."""

    client_id: Credential | None = None
    client_secret: Credential | None = None
    scope: str | None = None


class RefreshTokenForm(msgspec.Struct, kw_only=True, tag_field="grant_type", tag="refresh_token"):
    """RFC 6749 refresh_token: client authentication optional; when given, the refresh token
    must be that client's."""

    refresh_token: Credential
    client_id: Credential | None = None
    client_secret: Credential | None = None


OAuthTokenForm = ClientCredentialsForm | RefreshTokenForm


class OAuthRevokeForm(msgspec.Struct, kw_only=True):
    """RFC 7009 revocation request; the client authenticates as on /oauth/token."""

    token: Annotated[str, msgspec.Meta(min_length=1)]
    token_type_hint: Annotated[str, msgspec.Meta(max_length=64)] | None = None
    client_id: Credential | None = None
    client_secret: Credential | None = None


class TokenPairOut(msgspec.Struct, kw_only=True):
    """ApiTokenAuthV2Response: snake_case, as Frontegg's v2 route answers."""

    access_token: str
    refresh_token: str
    expires_in: int
    expires: str


class LegacyTokenPairOut(Out):
    """The v1 route's camelCase form of the same pair."""

    access_token: str
    refresh_token: str
    expires_in: int
    expires: str


class OAuthTokenOut(msgspec.Struct, kw_only=True):
    """The OAuth 2.0 token response (RFC 6749): access_token, token_type, expires_in,
    refresh_token."""

    access_token: str
    token_type: str
    expires_in: int
    refresh_token: str


def token_pair_response(pair: TokenPair) -> TokenPairOut:
    return TokenPairOut(
        access_token=pair.access_token,
        refresh_token=pair.refresh_token,
        expires_in=pair.expires_in,
        expires=iso(pair.expires_at),
    )


def legacy_token_pair_response(pair: TokenPair) -> LegacyTokenPairOut:
    return LegacyTokenPairOut(
        access_token=pair.access_token,
        refresh_token=pair.refresh_token,
        expires_in=pair.expires_in,
        expires=iso(pair.expires_at),
    )


def oauth_token_response(pair: TokenPair) -> OAuthTokenOut:
    return OAuthTokenOut(
        access_token=pair.access_token,
        token_type=BEARER,
        expires_in=pair.expires_in,
        refresh_token=pair.refresh_token,
    )


# --- RFC 6749 forms and client authentication ------------------------------------------------


@dataclass(frozen=True)
class Form:
    """A decoded application/x-www-form-urlencoded body; empty values count as absent."""

    fields: dict[str, str]

    def get(self, name: str, max_length: int | None = MAX_CREDENTIAL) -> str | None:
        value = self.fields.get(name)
        if value is not None and max_length is not None and len(value) > max_length:
            raise InvalidInput(f"`{name}` must be at most {max_length} characters")
        return value

    def require(self, name: str, max_length: int | None = MAX_CREDENTIAL) -> str:
        value = self.get(name, max_length)
        if value is None:
            raise InvalidInput(f"`{name}` is required")
        return value


async def read_form(request: Request[Any, Any, Any]) -> Form:
    """Decode the body strictly: the form media type, UTF-8, no NUL, no repeated parameter
    (OAuth 2.0 forbids repeating one); unknown parameters are kept and ignored by the caller."""
    media_type = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if media_type != FORM_CONTENT_TYPE:
        raise InvalidInput(f"The body must be {FORM_CONTENT_TYPE}")
    raw = await request.body()
    try:
        pairs = parse_qsl(
            raw.decode("utf-8"),
            keep_blank_values=True,
            strict_parsing=True,
            encoding="utf-8",
            errors="strict",
            max_num_fields=MAX_FORM_FIELDS,
        )
    except (UnicodeDecodeError, ValueError):
        raise InvalidInput("Malformed form body") from None
    fields: dict[str, str] = {}
    for name, value in pairs:
        if "\x00" in name or "\x00" in value:
            raise InvalidInput("The form must not contain NUL characters")
        if name in fields:
            raise InvalidInput(f"`{name}` must not be repeated")
        if value:
            fields[name] = value
    return Form(fields)


def uses_basic(request: Request[Any, Any, Any]) -> bool:
    scheme = request.headers.get("authorization", "").partition(" ")[0]
    return scheme.lower() == "basic"


def client_secret_of(request: Request[Any, Any, Any], form: Form) -> ClientSecret | None:
    """The client's credentials by client_secret_basic or client_secret_post, or None.

    Only one method per request (OAuth 2.0 forbids two); a partial or malformed one is a failed
    client authentication. With Basic, a client_id in the form too is tolerated (some clients
    always send it) as long as it names the same client.
    """
    posted_id = form.get("client_id")
    posted_secret = form.get("client_secret")
    if uses_basic(request):
        basic = _basic_credentials(request.headers["authorization"])
        if posted_secret is not None or posted_id not in (None, basic.client_id):
            raise InvalidInput("Use one client authentication method, not two")
        return basic
    if posted_id is None and posted_secret is None:
        return None
    if posted_id is None or posted_secret is None:
        raise InvalidClient("Both client_id and client_secret are required")
    return ClientSecret(client_id=posted_id, secret=posted_secret)


def _basic_credentials(header: str) -> ClientSecret:
    """OAuth 2.0 Basic client authentication: base64 of the form-urlencoded client_id, ':' and
    the form-urlencoded client_secret."""
    encoded = header.partition(" ")[2].strip()
    try:
        decoded = base64.b64decode(encoded, validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        raise InvalidClient("Malformed Basic credentials") from None
    raw_id, colon, raw_secret = decoded.partition(":")
    try:
        client_id = unquote_plus(raw_id, errors="strict")
        secret = unquote_plus(raw_secret, errors="strict")
    except UnicodeDecodeError:
        raise InvalidClient("Malformed Basic credentials") from None
    if not colon or not client_id or not secret:
        raise InvalidClient("Malformed Basic credentials")
    if "\x00" in client_id or "\x00" in secret:
        raise InvalidClient("Malformed Basic credentials")
    if len(client_id) > MAX_CREDENTIAL or len(secret) > MAX_CREDENTIAL:
        raise InvalidClient("Malformed Basic credentials")
    return ClientSecret(client_id=client_id, secret=secret)
