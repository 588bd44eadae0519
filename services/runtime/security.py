"""Authentication, the per-call context, and TLS credentials, shared by every service and client.

Authentication is off unless a service is given a token file. The file holds one line per
token, ``TENANT SHA256-HEX-OF-TOKEN [WRITER]`` (``rosemesh token new TENANT --writer NAME``
makes a token and its line); only hashes are ever stored or compared, and tokens are never
logged. The writer names who holds the token (a pipeline, a person) within the tenant; records
carry it as their provenance, and it defaults to the tenant's name. A call presents
``authorization: Bearer <token>``; the tenant of the token is the caller's identity for the
whole call. Health and reflection stay open.

Each RPC runs in its own asyncio task, so the server interceptor keeps what the call knows
(the caller's tenant, its credentials, its deadline) in a context variable, and the shared
client reads it on outbound calls: the inbound deadline caps every outbound call, and the
caller's credentials pass through to the services this one calls on its behalf.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from services.common.errors import DeadlineExceeded, PermissionDenied, Unauthenticated, Validator
from services.common.tenants import TENANT_PATTERN, TENANT_RULE
from services.runtime.interceptors import StreamWrapper, UnaryWrapper, WrappingInterceptor

AUTHORIZATION = "authorization"
BEARER = "Bearer "
#: Methods under these prefixes answer without credentials.
OPEN_METHODS = ("/grpc.health.v1.Health/", "/grpc.reflection.")
_SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")


def hash_token(token: str) -> str:
    """Tokens are 256-bit random strings, so one SHA-256 is a safe, fast way to store them."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def new_token() -> str:
    return secrets.token_urlsafe(32)


@dataclass(frozen=True)
class Principal:
    """Who a token authenticates: the tenant it acts for, and the writer within it."""

    tenant: str
    writer: str


class TokenTable:
    """Token hashes and who each one authenticates."""

    def __init__(self, principals_by_hash: dict[str, Principal | str]) -> None:
        self._principals = {
            h: p if isinstance(p, Principal) else Principal(p, p) for h, p in principals_by_hash.items()
        }

    @classmethod
    def from_file(cls, path: Path) -> TokenTable:
        principals: dict[str, Principal | str] = {}
        for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            line = raw.split("#", 1)[0].strip()
            if not line:
                continue
            parts = line.split()
            if (
                len(parts) not in (2, 3)
                or not all(TENANT_PATTERN.match(p) for p in parts[::2])
                or not _SHA256_HEX.match(parts[1])
            ):
                raise ValueError(
                    f"{path}:{number}: expected 'TENANT SHA256-HEX [WRITER]' (tenant and writer: a-z, 0-9, '-', '_')"
                )
            if parts[1] in principals:
                raise ValueError(f"{path}:{number}: the same token hash is listed twice")
            principals[parts[1]] = Principal(parts[0], parts[2] if len(parts) == 3 else parts[0])
        if not principals:
            raise ValueError(f"{path}: no tokens (authentication would refuse every call)")
        return cls(principals)

    def principal_for(self, token: str) -> Principal | None:
        return self._principals.get(hash_token(token))

    def authenticate(self, authorization: str | None) -> Principal:
        """Who an ``authorization`` value ("Bearer <token>") authenticates; raises Unauthenticated."""
        if authorization is None or not authorization.startswith(BEARER):
            raise Unauthenticated("missing credentials: send 'authorization: Bearer <token>'")
        principal = self.principal_for(authorization.removeprefix(BEARER).strip())
        if principal is None:
            raise Unauthenticated("invalid token")
        return principal

    def tenant_for(self, token: str) -> str | None:
        principal = self.principal_for(token)
        return principal.tenant if principal is not None else None


@dataclass(frozen=True)
class CallContext:
    """What a service knows about the call it is serving."""

    #: The tenant of the caller's token; None when authentication is off.
    tenant: str | None
    #: The caller's ``authorization`` value, passed on to the services this call reaches.
    authorization: str | None
    #: time.monotonic() by which the caller wants its answer; None when it set no deadline.
    deadline: float | None
    #: The writer the caller's token names ("" when authentication is off).
    writer: str = ""


_CALL: ContextVar[CallContext | None] = ContextVar("rosemesh_call", default=None)


def acting_tenant(check: Validator, tenant: str, field: str = "tenant") -> str:
    """The tenant a call acts for: the token's when authentication is on (a body tenant that
    disagrees is refused), otherwise the body's, which must then be a valid name."""
    authenticated = caller_tenant()
    if authenticated is None:
        check.check(bool(TENANT_PATTERN.match(tenant)), field, f"{TENANT_RULE}; got {tenant[:80]!r}")
        return tenant
    if tenant and tenant != authenticated:
        raise PermissionDenied(f"{field}: the call's token does not belong to tenant {tenant[:80]!r}")
    return authenticated


def caller_writer() -> str:
    """The writer of the call being served: its token's, "" when authentication is off."""
    call = _CALL.get()
    return call.writer if call is not None else ""


def caller_tenant() -> str | None:
    """The authenticated tenant of the call being served, or None when authentication is off."""
    call = _CALL.get()
    return call.tenant if call is not None else None


#: Time kept back from the caller's deadline to answer it.
ANSWER_MARGIN_S = 0.05


def outbound(timeout_s: float, token: str | None) -> tuple[float, tuple[tuple[str, str], ...]]:
    """The deadline and metadata of an outbound call made while serving a call (if any).

    The inbound deadline, less ANSWER_MARGIN_S, caps ``timeout_s``: the outbound call ends just
    before the caller gives up, so this service sees the failure (and its circuit breaker counts
    it) and answers, instead of being cancelled with the call. The caller's credentials win over
    this client's own ``token`` (a service's token for calls on its own behalf, such as at start).
    """
    call = _CALL.get()
    authorization = BEARER + token if token else None
    if call is not None:
        authorization = call.authorization or authorization
        if call.deadline is not None:
            remaining = call.deadline - time.monotonic() - ANSWER_MARGIN_S
            if remaining <= 0:
                raise DeadlineExceeded("the caller's deadline has passed before the outbound call")
            timeout_s = min(timeout_s, remaining)
    return timeout_s, (((AUTHORIZATION, authorization),) if authorization else ())


def _bearer(metadata: Sequence[tuple[str, Any]] | None) -> str | None:
    for key, value in metadata or ():
        if key == AUTHORIZATION and isinstance(value, str):
            return value
    return None


class CallContextInterceptor(WrappingInterceptor):
    """Authenticates each call (when a token table is given) and records its CallContext."""

    def __init__(self, tokens: TokenTable | None) -> None:
        self.tokens = tokens

    async def _admit(self, method: str, context: grpc.aio.ServicerContext) -> None:
        authorization = _bearer(context.invocation_metadata())
        remaining = context.time_remaining()
        deadline = time.monotonic() + remaining if remaining is not None else None
        tenant, writer = None, ""
        if self.tokens is not None and not method.startswith(OPEN_METHODS):
            try:
                principal = self.tokens.authenticate(authorization)
            except Unauthenticated as refused:
                await context.abort(grpc.StatusCode.UNAUTHENTICATED, str(refused))
            tenant, writer = principal.tenant, principal.writer
        _CALL.set(CallContext(tenant=tenant, writer=writer, authorization=authorization, deadline=deadline))

    def wrappers(self, method: str) -> tuple[UnaryWrapper, StreamWrapper]:
        def wrap_unary(behavior: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
            async def wrapped(request: Any, context: grpc.aio.ServicerContext) -> Any:
                await self._admit(method, context)
                return await behavior(request, context)

            return wrapped

        def wrap_stream(behavior: Callable[..., AsyncIterator[Any]]) -> Callable[..., AsyncIterator[Any]]:
            async def wrapped(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
                await self._admit(method, context)
                async for response in behavior(request, context):
                    yield response

            return wrapped

        return wrap_unary, wrap_stream


# -- TLS ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClientTls:
    """How a client verifies servers (``ca``) and, for mutual TLS, proves who it is (cert, key)."""

    ca: Path
    cert: Path | None = None
    key: Path | None = None


def channel_credentials(tls: ClientTls) -> grpc.ChannelCredentials:
    return grpc.ssl_channel_credentials(
        root_certificates=tls.ca.read_bytes(),
        private_key=tls.key.read_bytes() if tls.key else None,
        certificate_chain=tls.cert.read_bytes() if tls.cert else None,
    )


def server_credentials(cert: Path, key: Path, client_ca: Path | None) -> grpc.ServerCredentials:
    """TLS with the server's certificate; with ``client_ca``, mutual TLS: clients must show a
    certificate that CA signed, and plaintext or certificate-less clients are refused."""
    return grpc.ssl_server_credentials(
        [(key.read_bytes(), cert.read_bytes())],
        root_certificates=client_ca.read_bytes() if client_ca else None,
        require_client_auth=client_ca is not None,
    )
