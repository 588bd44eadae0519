"""The embedding service's OpenAI-compatible HTTP face: ``POST /v1/embeddings`` and ``GET /v1/models``.

It serves the gRPC face's embedders, so both share one batching queue per model and the same
request limits; OpenAI's client works against it unchanged (LangChain's OpenAIEmbeddings with
``check_embedding_ctx_length=False``: otherwise it sends token arrays, which are refused). Errors
come in OpenAI's shape, with the HTTP status of the gRPC code the same domain error maps to.
"""

from __future__ import annotations

import base64
import json
import logging
import re
import ssl
import time
from pathlib import Path
from typing import Any, Protocol

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from services.common.errors import (
    BackendUnavailable,
    DeadlineExceeded,
    FailedPrecondition,
    FieldViolation,
    InvalidInput,
    NotFound,
    Overloaded,
    PermissionDenied,
    ServiceError,
    Unauthenticated,
    Validator,
)
from services.embedding.core.embedder import Embedder, EmbedResult
from services.embedding.faces import EmbedLimits, select_embedder, timing_headers
from services.runtime.security import TokenTable

log = logging.getLogger(__name__)

#: Paths that answer without credentials, like gRPC health.
OPEN_PATHS = frozenset({"/health"})
#: The owner /v1/models names, as OpenAI's model objects carry one.
OWNER = "rosemesh"
ENCODINGS = ("float", "base64")

#: HTTP status, OpenAI error type and code of each domain error (the gRPC face maps the same
#: errors in services.runtime.interceptors); anything else is a 500.
_ERRORS: list[tuple[type[ServiceError], int, str, str | None]] = [
    (InvalidInput, 400, "invalid_request_error", None),
    (FailedPrecondition, 400, "invalid_request_error", "failed_precondition"),
    (Unauthenticated, 401, "invalid_request_error", "invalid_api_key"),
    (PermissionDenied, 403, "permission_error", "permission_denied"),
    (NotFound, 404, "invalid_request_error", "not_found"),
    (Overloaded, 429, "rate_limit_error", "overloaded"),
    (BackendUnavailable, 503, "server_error", "backend_unavailable"),
    (DeadlineExceeded, 504, "server_error", "deadline_exceeded"),
]
#: The shared checks name the gRPC field; here the texts are OpenAI's ``input``.
_TEXTS_FIELD = re.compile(r"^texts")


class HttpSettings(EmbedLimits, Protocol):
    """What the HTTP face reads of the embedding service's settings."""

    host: str
    http_port: int
    max_message_bytes: int
    grace_period_s: float
    tls_cert_file: Path | None
    tls_key_file: Path | None
    tls_ca_file: Path | None
    tls_require_client_cert: bool

    def token_table(self) -> TokenTable | None: ...


def error_response(
    status: int, message: str, kind: str, param: str | None = None, code: str | None = None
) -> web.Response:
    """An error in OpenAI's shape, which its client turns into the matching exception."""
    error = {"message": message, "type": kind, "param": param, "code": code}
    return web.json_response({"error": error}, status=status)


def service_error_response(error: ServiceError) -> web.Response:
    for kind, status, error_type, code in _ERRORS:
        if isinstance(error, kind):
            violations = error.violations if isinstance(error, InvalidInput) else []
            param = violations[0].field if violations else None
            return error_response(status, str(error), error_type, param, code)
    log.error("unmapped service error in HTTP request", exc_info=error)
    return error_response(500, f"internal error: {type(error).__name__}", "server_error")


@web.middleware
async def openai_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except web.HTTPException as exc:
        # aiohttp's own refusals (no route, wrong method, body over client_max_size), reshaped.
        if exc.status < 400:
            raise
        return error_response(exc.status, exc.text or exc.reason, "invalid_request_error")
    except ServiceError as exc:
        return service_error_response(exc)
    except Exception as exc:  # noqa: BLE001 - every error gets an answer
        log.exception("unhandled error in HTTP request", extra={"path": request.path})
        return error_response(500, f"internal error: {type(exc).__name__}", "server_error")


def bearer_auth(tokens: TokenTable) -> Middleware:
    """Middleware that admits a request whose ``Authorization: Bearer`` token is in ``tokens``."""

    @web.middleware
    async def authenticate(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path not in OPEN_PATHS:
            tokens.authenticate(request.headers.get("Authorization"))
        return await handler(request)

    return authenticate


_JSON_TYPES = {str: "a string", int: "an integer"}


def json_type(value: object) -> str:
    """The JSON name of a decoded value's type, for messages (never the value: it may be huge)."""
    if value is None:
        return "null"
    names = {bool: "a boolean", int: "a number", float: "a number", str: "a string", list: "an array"}
    return names.get(type(value), "an object")


async def read_json_object(request: web.Request) -> dict[str, Any]:
    raw = await request.read()  # raises 413 past the application's client_max_size
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError) as exc:  # bad UTF-8 or JSON; absurd nesting
        raise InvalidInput.single("body", f"not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise InvalidInput.single("body", f"must be a JSON object, got {json_type(body)}")
    return body


def texts_of(check: Validator, value: object) -> list[str]:
    """OpenAI's ``input``: one string or a list of strings (token-id arrays are refused)."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return value
    if value is None:
        check.check(False, "input", "is required: a string or a list of strings")
    elif isinstance(value, list) and all(isinstance(item, int | list) for item in value):
        check.check(False, "input", "token arrays are not supported; send the texts as strings")
    else:
        check.check(False, "input", f"must be a string or a list of strings, got {json_type(value)}")
    return []


def optional(check: Validator, body: dict[str, Any], name: str, kind: type[str] | type[int]) -> Any:
    """``body[name]`` if absent, null or of ``kind``; otherwise a violation and None."""
    value = body.get(name)
    # bool is an int in Python, not in JSON.
    ok = value is None or (isinstance(value, kind) and not isinstance(value, bool))
    check.check(ok, name, f"must be {_JSON_TYPES[kind]}, got {json_type(value)}")
    return value if ok else None


def embedding_payload(embedder: Embedder, result: EmbedResult, encoding: str) -> dict[str, Any]:
    """OpenAI's embedding list; base64 is each vector's little-endian float32 bytes."""
    matrix = result.matrix()
    if encoding == "base64":
        little_endian = matrix.astype("<f4", copy=False)
        vectors: list[Any] = [base64.b64encode(row.tobytes()).decode("ascii") for row in little_endian]
    else:
        vectors = matrix.tolist()
    tokens = sum(e.token_count for e in result.texts)
    return {
        "object": "list",
        "data": [{"object": "embedding", "index": i, "embedding": v} for i, v in enumerate(vectors)],
        "model": embedder.name,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }


class OpenAIHttpApi:
    """The HTTP site; started once the embedders have loaded, stopped before they are."""

    def __init__(self, settings: HttpSettings, embedders: dict[str, Embedder], default: str) -> None:
        self.settings = settings
        self.embedders = embedders
        self.default = default
        self.port: int | None = None
        self._runner: web.AppRunner | None = None

    def application(self, tokens: TokenTable | None) -> web.Application:
        middlewares = [openai_errors, *([bearer_auth(tokens)] if tokens is not None else [])]
        app = web.Application(client_max_size=self.settings.max_message_bytes, middlewares=middlewares)
        app.add_routes(
            [
                web.post("/v1/embeddings", self.create_embeddings),
                web.get("/v1/models", self.list_models),
                web.get("/health", self.health),
            ]
        )
        return app

    def _select(self, texts: list[str], model: str) -> Embedder:
        try:
            return select_embedder(self.settings, self.embedders, self.default, texts, model)
        except InvalidInput as error:
            renamed = [
                FieldViolation(_TEXTS_FIELD.sub("input", v.field), v.description) for v in error.violations
            ]
            raise InvalidInput(renamed) from None

    async def create_embeddings(self, request: web.Request) -> web.Response:
        began = time.perf_counter()
        body = await read_json_object(request)
        check = Validator()
        texts = texts_of(check, body.get("input"))
        model = optional(check, body, "model", str) or ""
        encoding = optional(check, body, "encoding_format", str) or "float"
        check.check(encoding in ENCODINGS, "encoding_format", f"must be one of {', '.join(ENCODINGS)}")
        dimensions = optional(check, body, "dimensions", int)
        check.raise_if_any()
        embedder = self._select(texts, model)
        if dimensions is not None and dimensions != embedder.dimension:
            raise InvalidInput.single(
                "dimensions",
                f"{embedder.name} makes {embedder.dimension}-dimensional vectors only; got {dimensions}",
            )
        result = await embedder.embed(texts)
        text = json.dumps(embedding_payload(embedder, result, encoding))
        headers = timing_headers(result.timing, time.perf_counter() - began)
        return web.Response(text=text, content_type="application/json", headers=headers)

    async def list_models(self, request: web.Request) -> web.Response:
        models = [{"id": name, "object": "model", "owned_by": OWNER, "created": 0} for name in self.embedders]
        return web.json_response({"object": "list", "data": models})

    async def health(self, request: web.Request) -> web.Response:
        """200 whenever it answers: the site opens only once the models have loaded."""
        return web.json_response({"status": "ok", "models": sorted(self.embedders)})

    def _ssl_context(self) -> ssl.SSLContext | None:
        """TLS with the gRPC port's certificate, and its client-certificate rule."""
        settings = self.settings
        if settings.tls_cert_file is None or settings.tls_key_file is None:
            return None
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(settings.tls_cert_file, settings.tls_key_file)
        if settings.tls_require_client_cert and settings.tls_ca_file is not None:
            context.load_verify_locations(settings.tls_ca_file)
            context.verify_mode = ssl.CERT_REQUIRED
        return context

    async def start(self) -> int:
        """Binds the site (``http_port`` 0 picks a free port) and returns the bound port."""
        settings = self.settings
        tokens = settings.token_table()
        # No access log: the gRPC face logs no call either.
        app = self.application(tokens)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=settings.grace_period_s)
        await runner.setup()
        ssl_context = self._ssl_context()
        try:
            await web.TCPSite(runner, settings.host, settings.http_port, ssl_context=ssl_context).start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner, self.port = runner, runner.addresses[0][1]
        scheme = "https" if ssl_context is not None else "http"
        log.info(
            "http api listening",
            extra={
                "address": f"{settings.host}:{self.port}",
                "base_url": f"{scheme}://{settings.host}:{self.port}/v1",
                "auth": tokens is not None,
            },
        )
        return self.port

    async def stop(self) -> None:
        """Stops accepting, lets in-flight requests finish (up to the grace period), closes."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
