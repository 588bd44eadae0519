"""JSON logs carry the active trace id."""

from __future__ import annotations

import io
import json
import logging

from opentelemetry.sdk.trace import TracerProvider

from services.runtime.telemetry import setup_logging


def test_log_lines_are_json_with_trace_id() -> None:
    setup_logging("unit", "INFO")
    stream = io.StringIO()
    logging.getLogger().handlers[0].setStream(stream)  # type: ignore[attr-defined]
    tracer = TracerProvider().get_tracer("unit")
    with tracer.start_as_current_span("work") as span:
        logging.getLogger("unit").info("inside", extra={"texts": 3})
    logging.getLogger("unit").info("outside")
    inside, outside = (json.loads(line) for line in stream.getvalue().splitlines())
    assert inside["trace_id"] == format(span.get_span_context().trace_id, "032x")
    assert inside["message"] == "inside" and inside["texts"] == 3 and inside["service"] == "unit"
    assert outside["trace_id"] is None
