"""Server interceptors shared by every service, and the one map from domain errors to gRPC status."""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from services.common.errors import (
    BackendUnavailable,
    DeadlineExceeded,
    FailedPrecondition,
    InvalidInput,
    NotFound,
    Overloaded,
    PermissionDenied,
    ServiceError,
    Unauthenticated,
)

log = logging.getLogger(__name__)

UnaryWrapper = Callable[[Callable[..., Awaitable[Any]]], Callable[..., Awaitable[Any]]]
StreamWrapper = Callable[[Callable[..., AsyncIterator[Any]]], Callable[..., AsyncIterator[Any]]]


def rewrap_handler(
    handler: grpc.RpcMethodHandler, wrap_unary_response: UnaryWrapper, wrap_stream_response: StreamWrapper
) -> grpc.RpcMethodHandler:
    """Rebuild a method handler with its behaviour wrapped, whatever its streaming shape."""
    codecs = {
        "request_deserializer": handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }
    if handler.unary_unary:
        return grpc.unary_unary_rpc_method_handler(wrap_unary_response(handler.unary_unary), **codecs)
    if handler.stream_unary:
        return grpc.stream_unary_rpc_method_handler(wrap_unary_response(handler.stream_unary), **codecs)
    if handler.unary_stream:
        return grpc.unary_stream_rpc_method_handler(wrap_stream_response(handler.unary_stream), **codecs)
    return grpc.stream_stream_rpc_method_handler(wrap_stream_response(handler.stream_stream), **codecs)


class WrappingInterceptor(grpc.aio.ServerInterceptor, ABC):
    """An interceptor that wraps the behaviour of every method handler it sees."""

    @abstractmethod
    def wrappers(self, method: str) -> tuple[UnaryWrapper, StreamWrapper] | None:
        """How to wrap ``method``'s behaviour: (for unary responses, for streamed responses), or
        None to pass the handler through untouched."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        wrappers = self.wrappers(handler_call_details.method)
        return handler if wrappers is None else rewrap_handler(handler, *wrappers)


_CODES: list[tuple[type[ServiceError], int]] = [
    (InvalidInput, code_pb2.INVALID_ARGUMENT),
    (NotFound, code_pb2.NOT_FOUND),
    (FailedPrecondition, code_pb2.FAILED_PRECONDITION),
    (Overloaded, code_pb2.RESOURCE_EXHAUSTED),
    (BackendUnavailable, code_pb2.UNAVAILABLE),
    (DeadlineExceeded, code_pb2.DEADLINE_EXCEEDED),
    (Unauthenticated, code_pb2.UNAUTHENTICATED),
    (PermissionDenied, code_pb2.PERMISSION_DENIED),
]


def to_status(error: ServiceError) -> grpc.Status:
    """The gRPC status for a domain error; invalid input carries google.rpc.BadRequest details."""
    code = next((c for kind, c in _CODES if isinstance(error, kind)), code_pb2.INTERNAL)
    status = status_pb2.Status(code=code, message=str(error))
    if isinstance(error, InvalidInput):
        detail = any_pb2.Any()
        detail.Pack(
            error_details_pb2.BadRequest(
                field_violations=[
                    error_details_pb2.BadRequest.FieldViolation(field=v.field, description=v.description)
                    for v in error.violations
                ]
            )
        )
        status.details.append(detail)
    return rpc_status.to_status(status)


async def _abort(context: grpc.aio.ServicerContext, exc: Exception) -> None:
    if isinstance(exc, ServiceError):
        await context.abort_with_status(to_status(exc))
    log.exception("unhandled error in RPC")
    await context.abort(grpc.StatusCode.INTERNAL, f"internal error: {type(exc).__name__}")


class ErrorMappingInterceptor(WrappingInterceptor):
    """Turns ServiceError subclasses raised by servicers into their gRPC status."""

    def wrappers(self, method: str) -> tuple[UnaryWrapper, StreamWrapper]:
        def wrap_unary_response(behavior: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
            async def wrapped(request: Any, context: grpc.aio.ServicerContext) -> Any:
                try:
                    return await behavior(request, context)
                except grpc.aio.AbortError:
                    raise
                except Exception as exc:  # noqa: BLE001 - every error gets a status
                    await _abort(context, exc)

            return wrapped

        def wrap_stream_response(behavior: Callable[..., AsyncIterator[Any]]) -> Callable[..., AsyncIterator[Any]]:
            async def wrapped(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
                try:
                    async for response in behavior(request, context):
                        yield response
                except grpc.aio.AbortError:
                    raise
                except Exception as exc:  # noqa: BLE001
                    await _abort(context, exc)

            return wrapped

        return wrap_unary_response, wrap_stream_response
