"""Shared shapes and limits for request bodies: no NUL bytes; bounded strings, metadata, nesting."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Final, TypeVar, overload

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


# The route option naming what a route's body is: `read_body` decodes into it and the API
# reference (api/reference/) describes it, so the two cannot differ.
BODY_OPTION: Final = "body"
BODY_MEDIA_TYPE_OPTION: Final = "body_media_type"
JSON: Final = "application/json"
FORM: Final = "application/x-www-form-urlencoded"


def reads(model: Any, *more: dict[str, Any], media_type: str = JSON) -> dict[str, Any]:
    """A route's `opt` declaring its body: `@post(PATH, opt=reads(CreateThing))`, merged with any
    other options given (`reads(CreateThing, CARRIES_SECRET)`). A JSON body is then read with
    `read_body(request)`; a form body (media_type=FORM) is read by its own parser and the struct
    only describes its fields."""
    merged: dict[str, Any] = {}
    for option in more:
        merged.update(option)
    return {**merged, BODY_OPTION: model, BODY_MEDIA_TYPE_OPTION: media_type}


ANSWER_OPTION: Final = "answer"


def answers(model: Any, *more: dict[str, Any]) -> dict[str, Any]:
    """A route's `opt` naming the struct its 200 answer has, where the handler returns bytes it
    encoded itself (the hot path) or a plain dict: the API reference describes that struct."""
    merged: dict[str, Any] = {}
    for option in more:
        merged.update(option)
    return {**merged, ANSWER_OPTION: model}


def declared_body(route_handler: Any) -> Any:
    """The struct (or the type) a route declares with `reads`, or None."""
    return route_handler.opt.get(BODY_OPTION)


async def read_body(request: Request[Any, Any, Any], model: type[T] | None = None) -> T:
    """Decode the JSON body strictly into the struct the route declares with `reads` (or, for a
    route not yet declaring one, into `model`): "10" is not a number, "false" not a boolean.

    Litestar's own body conversion is lax, so every route with a body reads it through here.
    """
    declared = declared_body(request.route_handler)
    if declared is not None and model is not None and declared is not model:
        raise TypeError(f"the route declares {declared} and decodes {model}")
    target: Any = declared or model
    if target is None:
        raise TypeError("read_body needs the route to declare its body: opt=reads(Struct)")
    raw = await request.body()
    try:
        try:
            decoded: T = msgspec.json.decode(raw, type=target, strict=True)
        except msgspec.ValidationError as error:
            if _FLOAT_REFUSED not in str(error):
                raise
            # JSON has one kind of number: 1.0 is the integer 1 (as JSON Schema, and so the API
            # reference, says). Only a refused body pays for the second decoding.
            decoded = msgspec.convert(_integral_floats_as_ints(msgspec.json.decode(raw)), target)
        return decoded
    except msgspec.ValidationError as error:
        raise InvalidInput(_with_allowed_values(str(error), target)) from None
    except msgspec.DecodeError as error:
        raise InvalidInput(f"Malformed JSON body: {error}") from None
    except RecursionError:
        # The decoder stops at the interpreter's recursion limit, cleanly: this is bad input.
        message = f"Malformed JSON body: nested too deeply (at most {MAX_DEPTH} levels)"
        raise InvalidInput(message) from None


_FLOAT_REFUSED = "got `float`"


def _integral_floats_as_ints(value: Any) -> Any:
    """`value` with every float that is a whole number (1.0, 2e3) made an int, walked with a
    stack of its own (the decoder bounded the nesting already)."""
    root = [value]
    pending: list[tuple[Any, Any]] = [(root, 0)]
    while pending:
        container, key = pending.pop()
        item = container[key]
        if isinstance(item, float) and item.is_integer():
            container[key] = int(item)
        elif isinstance(item, dict):
            pending.extend((item, name) for name in item)
        elif isinstance(item, list):
            pending.extend((item, index) for index in range(len(item)))
    return root[0]


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
