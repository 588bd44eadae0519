"""What both faces of the embedding service share (gRPC and the OpenAI-style HTTP API):
request checks and the timing report."""

from __future__ import annotations

from typing import Protocol

from services.common.errors import Validator
from services.embedding.core.embedder import Embedder, Timing


class EmbedLimits(Protocol):
    max_texts: int
    max_text_bytes: int


def select_embedder(
    limits: EmbedLimits, embedders: dict[str, Embedder], default: str, texts: list[str], model: str
) -> Embedder:
    """The embedder a request names, once its texts are within limits; raises InvalidInput
    naming every bad field at once."""
    v = Validator()
    limit = limits.max_texts
    v.check(len(texts) > 0, "texts", "must contain at least one text")
    v.check(len(texts) <= limit, "texts", f"{len(texts)} texts exceed the limit of {limit} per request; split the batch")
    for i, text in enumerate(texts[: limit + 1]):
        if not v.check(bool(text.strip()), f"texts[{i}]", "must not be empty or only whitespace"):
            continue
        size = len(text.encode("utf-8"))
        v.check(
            size <= limits.max_text_bytes,
            f"texts[{i}]",
            f"{size} bytes exceed the limit of {limits.max_text_bytes} bytes per text",
        )
    name = model or default
    v.check(name in embedders, "model", f"unknown model {name!r}; available: {', '.join(sorted(embedders))}")
    v.raise_if_any()
    return embedders[name]


def timing_headers(timing: Timing, total_s: float) -> dict[str, str]:
    """Where the call's time went, in milliseconds, under Hugging Face TEI's header names."""
    spent = {
        "x-tokenization-time": timing.tokenization_s,
        "x-queue-time": timing.queue_s,
        "x-inference-time": timing.inference_s,
        "x-total-time": total_s,
    }
    return {name: f"{seconds * 1000:.3f}" for name, seconds in spent.items()}
