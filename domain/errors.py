"""Domain exceptions; api.errors maps each to an HTTP status once."""

from __future__ import annotations


class DomainError(Exception):
    """Base of every error a caller may see; `message` is safe to show."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidInput(DomainError):
    """The request is well-formed but its values are not acceptable."""


class MissingHeader(InvalidInput):
    """A request header the operation needs was not sent: one message for every route."""

    def __init__(self, header: str) -> None:
        super().__init__(f"The {header} header is required")


class Unauthenticated(DomainError):
    """No credentials, or credentials that do not check out."""


class Forbidden(DomainError):
    """The caller is known but may not do this."""


class Disabled(Forbidden):
    """M2M tokens are switched off for the environment."""

    def __init__(self) -> None:
        super().__init__("Api tokens are disabled")


class NotFound(DomainError):
    """Unknown, or not visible to this caller (another tenant's object is unknown)."""


class Conflict(DomainError):
    """The change clashes with existing state (a duplicate key, say)."""


class RateLimited(DomainError):
    """Too many attempts; retry after `retry_after` seconds."""

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


# When to come back after a dependency could not answer: PostgreSQL back from a restart, a lock
# released, the validity cache reachable again are a matter of seconds.
UNAVAILABLE_RETRY_AFTER_SECONDS = 1


class Unavailable(DomainError):
    """A dependency (database, cache) cannot answer now; retry after `retry_after` seconds."""

    def __init__(
        self,
        message: str = "Service temporarily unavailable",
        retry_after: int = UNAVAILABLE_RETRY_AFTER_SECONDS,
    ) -> None:
        super().__init__(message)
        self.retry_after = retry_after
