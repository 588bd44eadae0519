"""Metrics scraped from the metrics port, and one trace across two real processes."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent import futures

import grpc
import pytest
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from services.common.net import free_port
from services.embedding.client import EmbeddingClient
from services.supervisor import RunningService, service_process
from tests.helpers import scrape

EMBED_METHOD = "/rosemesh.embedding.v1.EmbeddingService/Embed"


async def test_metrics_port_shows_latency_histogram_codes_and_in_flight(
    embedding_service: RunningService, embedding_client: EmbeddingClient
) -> None:
    for _ in range(5):
        await embedding_client.embed(["metrics please", "and another"])
    with pytest.raises(grpc.aio.AioRpcError):
        await embedding_client.embed([""])
    families = scrape(embedding_service)

    histogram = families["rosemesh_grpc_server_handling_seconds"]
    count = next(
        s.value for s in histogram if s.name.endswith("_count") and s.labels["grpc_method"] == EMBED_METHOD
    )
    assert count >= 6
    buckets = {s.labels["le"] for s in histogram if s.name.endswith("_bucket")}
    assert {"0.001", "0.005", "0.01"} <= buckets  # millisecond-scale buckets
    finished_by_code = {
        s.labels["grpc_code"]: s.value
        for s in families["rosemesh_grpc_server_handled"]
        if s.name.endswith("_total") and s.labels["grpc_method"] == EMBED_METHOD
    }
    assert finished_by_code["OK"] >= 5 and finished_by_code["INVALID_ARGUMENT"] >= 1
    in_flight = [s for s in families["rosemesh_grpc_server_in_flight"] if s.labels["grpc_method"] == EMBED_METHOD]
    assert in_flight and in_flight[0].value == 0
    batch_counts = [s.value for s in families["rosemesh_batch_size"] if s.name.endswith("_count")]
    assert sum(batch_counts) >= 5


class SpanSink(trace_service_pb2_grpc.TraceServiceServicer):
    """An in-process OTLP trace collector."""

    def __init__(self) -> None:
        self.spans: list[tuple[str, object]] = []
        self.lock = threading.Lock()

    def Export(self, request: trace_service_pb2.ExportTraceServiceRequest, context: object) -> object:
        with self.lock:
            for resource_spans in request.resource_spans:
                service = next(
                    a.value.string_value for a in resource_spans.resource.attributes if a.key == SERVICE_NAME
                )
                for scope in resource_spans.scope_spans:
                    self.spans.extend((service, span) for span in scope.spans)
        return trace_service_pb2.ExportTraceServiceResponse()


@pytest.fixture()
def otlp_sink() -> Iterator[tuple[SpanSink, str]]:
    sink = SpanSink()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(sink, server)
    port = free_port()
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    yield sink, f"http://127.0.0.1:{port}"
    server.stop(0)


async def test_one_trace_spans_the_client_and_the_server_process(
    otlp_sink: tuple[SpanSink, str], monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> None:
    sink, endpoint = otlp_sink
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_INSECURE", "true")
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "100")

    provider = TracerProvider(resource=Resource.create({SERVICE_NAME: "product-backend"}))
    provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=endpoint, insecure=True)))
    trace.set_tracer_provider(provider)
    # the provider is global for the rest of the session: shut it down so that later client
    # spans are not exported, synchronously and with retries, to a sink that has gone
    request.addfinalizer(provider.shutdown)

    with service_process("embedding", ["--no-fast"]) as service:
        async with EmbeddingClient(service.address) as client:
            with provider.get_tracer("test").start_as_current_span("checkout") as root:
                await client.embed(["trace me"])
            trace_id = root.get_span_context().trace_id.to_bytes(16, "big")

        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            with sink.lock:
                server_spans = [s for name, s in sink.spans if name == "rosemesh-embedding" and s.trace_id == trace_id]
            if server_spans:
                break
            time.sleep(0.1)

    with sink.lock:
        spans = [(name, s) for name, s in sink.spans if s.trace_id == trace_id]
    client_spans = [s for name, s in spans if name == "product-backend" and s.name == EMBED_METHOD]
    assert server_spans, f"no server span with the client's trace id; saw {[(n, s.name) for n, s in sink.spans]}"
    assert len(client_spans) == 1, [(n, s.name) for n, s in spans]
    server_span, client_span = server_spans[0], client_spans[0]
    assert server_span.parent_span_id == client_span.span_id  # the server span is the client call's child
    assert client_span.parent_span_id == root.get_span_context().span_id.to_bytes(8, "big")
