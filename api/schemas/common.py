"""Shared shapes and limits for request bodies: no NUL bytes; bounded strings, metadata, nesting."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, TypeVar, overload

import msgspec
import msgspec.inspect as mi
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
        raise InvalidInput(_with_allowed_values(str(error), model)) from None
    except msgspec.DecodeError as error:
        raise InvalidInput(f"Malformed JSON body: {error}") from None
    except RecursionError:
        # The decoder stops at the interpreter's recursion limit, cleanly: this is bad input.
        message = f"Malformed JSON body: nested too deeply (at most {MAX_DEPTH} levels)"
        raise InvalidInput(message) from None


_REFUSED_AT = re.compile(r" - at `(\$[^`]*)`$")
_PATH_STEP = re.compile(r"\.([^.\[]+)|\[(\d+)\]")


def _with_allowed_values(message: str, model: Any) -> str:
    """msgspec names a refused enum value (or type) and where, not what is allowed: add that."""
    refused = _REFUSED_AT.search(message)
    if refused is None:
        return message
    steps = [name or int(index) for name, index in _PATH_STEP.findall(refused.group(1))]
    allowed = _allowed_at(mi.type_info(model), steps)
    if not allowed:
        return message
    return f"{message}; allowed: {', '.join(repr(value) for value in allowed)}"


def _allowed_at(info: mi.Type, steps: list[str | int]) -> tuple[Any, ...] | None:
    """The values of the Literal or Enum found at `steps` (field names, list indexes)."""
    if isinstance(info, mi.Metadata):
        return _allowed_at(info.type, steps)
    if isinstance(info, mi.UnionType):
        found = (_allowed_at(member, steps) for member in info.types)
        return next((values for values in found if values), None)
    if not steps:
        if isinstance(info, mi.LiteralType):
            return info.values
        if isinstance(info, mi.EnumType):
            return tuple(member.value for member in info.cls)
        return None
    step, rest = steps[0], steps[1:]
    if isinstance(step, str) and isinstance(info, mi.StructType):
        field = next((field for field in info.fields if field.encode_name == step), None)
        return None if field is None else _allowed_at(field.type, rest)
    if isinstance(step, int) and isinstance(info, mi.ListType | mi.VarTupleType):
        return _allowed_at(info.item_type, rest)
    return None
