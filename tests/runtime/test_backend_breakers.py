"""The shared circuit breaker on the Triton client, the OpenAI-compatible chat client and the
Qdrant server store: a dead backend fails fast as BackendUnavailable, the circuit opens, and a
trial call after the reset timeout closes it again once the backend is back."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import grpc
import numpy as np
import pytest
from qdrant_client import QdrantClient
from tritonclient.grpc import model_config_pb2, service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException

from services.adapters.chat import ChatEndpoint
from services.adapters.tritonserver_client import TritonModels
from services.common.breaker import CLOSED, OPEN, CircuitBreaker, CircuitOpen
from services.common.errors import BackendUnavailable
from services.common.net import free_port
from services.experience.backends.qdrant_server import QdrantServerStore

RESET_S = 0.3


def quick(breaker: CircuitBreaker) -> CircuitBreaker:
    breaker.reset_timeout_s = RESET_S
    return breaker


class FakeTriton(service_pb2_grpc.GRPCInferenceServiceServicer):
    """Just enough of Triton's gRPC protocol for one model that doubles its input, or fails
    every inference with ``error`` (an INTERNAL status's message) when one is given."""

    def __init__(self, error: str | None = None) -> None:
        self.error = error

    async def ServerReady(self, request, context):  # noqa: N802 - Triton's method names
        return service_pb2.ServerReadyResponse(ready=True)

    async def ModelReady(self, request, context):  # noqa: N802
        return service_pb2.ModelReadyResponse(ready=True)

    async def ModelConfig(self, request, context):  # noqa: N802
        return service_pb2.ModelConfigResponse(config=model_config_pb2.ModelConfig(name="double", max_batch_size=8))

    async def ModelInfer(self, request, context):  # noqa: N802
        if self.error is not None:
            await context.abort(grpc.StatusCode.INTERNAL, self.error)
        x = np.frombuffer(request.raw_input_contents[0], dtype=np.float32)
        output = service_pb2.ModelInferResponse.InferOutputTensor(name="y", datatype="FP32", shape=[len(x)])
        return service_pb2.ModelInferResponse(
            model_name="double", outputs=[output], raw_output_contents=[(2 * x).tobytes()]
        )


async def fake_triton(port: int, error: str | None = None) -> grpc.aio.Server:
    server = grpc.aio.server()
    service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(FakeTriton(error), server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    return server


async def test_triton_client_fails_fast_opens_and_recovers() -> None:
    port = free_port()
    server = await fake_triton(port)
    triton = TritonModels(f"127.0.0.1:{port}", timeout_s=5)
    breaker = quick(triton.breaker)
    await triton.start(["double"])
    x = {"x": np.array([1.0, 2.0], dtype=np.float32)}
    assert (await triton.infer("double", x, ["y"]))["y"].tolist() == [2.0, 4.0]
    await server.stop(None)
    for _ in range(breaker.failure_threshold):
        started = time.monotonic()
        with pytest.raises(BackendUnavailable):
            await triton.infer("double", x, ["y"])
        assert time.monotonic() - started < 2.0
    assert breaker.state == OPEN
    with pytest.raises(CircuitOpen):
        await triton.infer("double", x, ["y"])
    server = await fake_triton(port)
    deadline = time.monotonic() + 15  # the channel's reconnect backoff may refuse a trial or two
    while True:
        try:
            result = await triton.infer("double", x, ["y"])
            break
        except BackendUnavailable:
            assert time.monotonic() < deadline, "the Triton client did not recover"
            await asyncio.sleep(RESET_S)
    assert result["y"].tolist() == [2.0, 4.0] and breaker.state == CLOSED
    await triton.close()
    await server.stop(None)


async def test_a_triton_going_down_counts_as_unavailable_and_a_model_error_does_not() -> None:
    x = {"x": np.array([1.0], dtype=np.float32)}
    for error, raised, state in [
        ("SegmentFailed: segment 1: Error when running inference: Server not ready", BackendUnavailable, OPEN),
        ("the model raised ValueError", InferenceServerException, CLOSED),
    ]:
        port = free_port()
        server = await fake_triton(port, error)
        triton = TritonModels(f"127.0.0.1:{port}")
        await triton.start(["double"])
        for _ in range(triton.breaker.failure_threshold):
            with pytest.raises(raised):
                await triton.infer("double", x, ["y"])
        assert triton.breaker.state == state
        await triton.close()
        await server.stop(None)


class FakeChat(BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # noqa: N802 - http.server's method name
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if body["model"] == "refused":
            self._answer(400, {"error": {"message": "bad request", "type": "invalid_request_error"}})
            return
        message = {"role": "assistant", "content": "ok"}
        self._answer(200, {"id": "1", "object": "chat.completion", "created": 0, "model": body["model"],
                           "choices": [{"index": 0, "message": message, "finish_reason": "stop"}]})  # fmt: skip

    def _answer(self, status: int, payload: dict) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


@contextmanager
def fake_chat(port: int) -> Iterator[None]:
    server = ThreadingHTTPServer(("127.0.0.1", port), FakeChat)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield
    finally:
        server.shutdown()
        server.server_close()


async def test_chat_endpoint_fails_fast_opens_and_recovers() -> None:
    port = free_port()
    endpoint = ChatEndpoint(f"http://127.0.0.1:{port}/v1", "judge", timeout_s=5, max_retries=0)
    breaker = quick(endpoint.breaker)
    messages = [{"role": "user", "content": "hi"}]
    for _ in range(breaker.failure_threshold):
        started = time.monotonic()
        with pytest.raises(BackendUnavailable, match="cannot connect"):
            await endpoint.complete(messages)
        assert time.monotonic() - started < 2.0
    assert breaker.state == OPEN
    with pytest.raises(CircuitOpen):
        await endpoint.complete(messages)
    with fake_chat(port):
        time.sleep(RESET_S)
        assert await endpoint.complete(messages) == "ok"
        assert breaker.state == CLOSED
        refused = ChatEndpoint(f"http://127.0.0.1:{port}/v1", "refused", max_retries=0)
        for _ in range(refused.breaker.failure_threshold + 1):  # the request's fault, not the endpoint's
            with pytest.raises(BackendUnavailable, match="HTTP 400"):
                await refused.complete(messages)
        assert refused.breaker.state == CLOSED
    await endpoint.close()
    await refused.close()


def test_qdrant_server_store_fails_fast_opens_and_recovers() -> None:
    store = QdrantServerStore(QdrantClient(":memory:"), 4)
    breaker = quick(store.breaker)
    working, store.client = store.client, QdrantClient(
        url=f"http://127.0.0.1:{free_port()}", prefer_grpc=True, check_compatibility=False
    )
    for _ in range(breaker.failure_threshold):
        started = time.monotonic()
        with pytest.raises(BackendUnavailable, match="Qdrant"):
            store.count("acme")
        assert time.monotonic() - started < 5.0
    assert breaker.state == OPEN
    with pytest.raises(CircuitOpen):
        store.count("acme")
    store.client = working
    time.sleep(RESET_S)
    assert store.count("acme") == 0 and breaker.state == CLOSED
