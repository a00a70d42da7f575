"""Shared shapes and limits for request bodies: no NUL bytes; bounded strings, metadata, nesting."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, TypeVar, overload

import msgspec
from litestar import Request
from litestar.params import HeaderParameter, PathParameter

from domain.errors import InvalidInput
from domain.inputs import MAX_DEPTH, refusal

T = TypeVar("T")

MAX_NAME = 255
MAX_DESCRIPTION = 1024
MAX_METADATA_BYTES = 8192
MAX_IDS = 200

Name = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_NAME)]
Text = Annotated[str, msgspec.Meta(max_length=MAX_DESCRIPTION)]
Id = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_NAME)]
IdList = Annotated[list[Id], msgspec.Meta(max_length=MAX_IDS)]

# Path and header ids: bounded, and no NUL (PostgreSQL cannot even compare one).
ID_PATTERN = r"^[^\x00]+$"
PathId = Annotated[str, PathParameter(max_length=MAX_NAME, pattern=ID_PATTERN)]
TenantHeader = Annotated[
    str, HeaderParameter(name="frontegg-tenant-id", max_length=MAX_NAME, pattern=ID_PATTERN)
]
OptionalTenantHeader = Annotated[
    str | None,
    HeaderParameter(
        name="frontegg-tenant-id", required=False, max_length=MAX_NAME, pattern=ID_PATTERN
    ),
]
OptionalUserHeader = Annotated[
    str | None,
    HeaderParameter(
        name="frontegg-user-id", required=False, max_length=MAX_NAME, pattern=ID_PATTERN
    ),
]


class Body(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, rename="camel"):
    """Base of every request body: unknown fields are refused, strings carry no NUL, objects and
    lists nest at most MAX_DEPTH levels."""

    def __post_init__(self) -> None:
        for field, name in zip(self.__struct_fields__, self.__struct_encode_fields__, strict=True):
            value = getattr(self, field)
            refused = refusal(value)
            if refused is not None:
                raise ValueError(f"`{name}` {refused}")
            if isinstance(value, dict) and len(msgspec.json.encode(value)) > MAX_METADATA_BYTES:
                raise ValueError(f"`{name}` must encode to at most {MAX_METADATA_BYTES} bytes")


class Out(msgspec.Struct, kw_only=True, rename="camel"):
    """Base of every response body, in Frontegg's camelCase."""


@overload
def iso(value: datetime) -> str: ...
@overload
def iso(value: None) -> None: ...
def iso(value: datetime | None) -> str | None:
    """Frontegg's timestamp form: ISO 8601 in UTC with milliseconds and Z."""
    if value is None:
        return None
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


async def read_body(request: Request[Any, Any, Any], model: type[T]) -> T:
    """Decode the JSON body into `model` strictly: "10" is not a number, "false" not a boolean.

    Litestar's own body conversion is lax, so every route with a body reads it through here.
    """
    raw = await request.body()
    try:
        return msgspec.json.decode(raw, type=model, strict=True)
    except msgspec.ValidationError as error:
        raise InvalidInput(str(error)) from None
    except msgspec.DecodeError as error:
        raise InvalidInput(f"Malformed JSON body: {error}") from None
    except RecursionError:
        # The decoder stops at the interpreter's recursion limit, cleanly: this is bad input.
        message = f"Malformed JSON body: nested too deeply (at most {MAX_DEPTH} levels)"
        raise InvalidInput(message) from None
