"""Domain errors, free of gRPC, so that cores and backends can raise them.

The server's error interceptor maps each one to its gRPC status in one place.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class FieldViolation:
    field: str
    description: str


class ServiceError(Exception):
    """Base of the errors a service reports to its caller."""


@dataclass
class InvalidInput(ServiceError):
    """The request is malformed; each violation names the field at fault."""

    violations: list[FieldViolation] = field(default_factory=list)

    def __post_init__(self) -> None:
        super().__init__(self.message)

    @property
    def message(self) -> str:
        return "; ".join(f"{v.field}: {v.description}" for v in self.violations) or "invalid request"

    @classmethod
    def single(cls, field_name: str, description: str) -> InvalidInput:
        return cls([FieldViolation(field_name, description)])


class NotFound(ServiceError):
    """The named resource does not exist."""


class FailedPrecondition(ServiceError):
    """The request is well formed but the system is not in the state it needs (e.g. a model
    that keeps no weights to differentiate)."""


class Overloaded(ServiceError):
    """The service is at capacity; the caller should back off and retry."""


class BackendUnavailable(ServiceError):
    """A backend the service depends on (model runtime, database, peer) cannot be reached."""


class DeadlineExceeded(ServiceError):
    """The caller's deadline leaves no time for the work (or the outbound call) it asked for."""


class Unauthenticated(ServiceError):
    """The call carries no valid credentials."""


class PermissionDenied(ServiceError):
    """The caller is authenticated but may not touch what it asked for (another tenant's data)."""


class Validator:
    """Collects field violations, then raises them together."""

    def __init__(self) -> None:
        self.violations: list[FieldViolation] = []

    def check(self, ok: bool, field_name: str, description: str) -> bool:
        if not ok:
            self.violations.append(FieldViolation(field_name, description))
        return ok

    def raise_if_any(self) -> None:
        if self.violations:
            raise InvalidInput(self.violations)
