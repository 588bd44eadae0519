"""The Triton backend, against the real tritonserver, embeds exactly like ONNX Runtime in process."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence

import numpy as np
import pytest

from services.common.errors import BackendUnavailable
from services.common.net import free_port
from services.common.tokens import TextEncoder, pad_batch
from services.embedding.backends.onnx import OnnxRuntimeBackend
from services.embedding.backends.triton import TritonBackend
from services.embedding.bundle import ExportedModel
from services.embedding.client import EmbeddingClient
from services.supervisor import service_process
from tests.conftest import TritonEndpoint

SENTENCES = [
    "Hi.",
    "Paris is the capital of France.",
    "The quick brown fox jumps over the lazy dog.",
    "How do I reset my online banking password?",
    "I was charged twice for the same card payment this morning.",
    "Photosynthesis converts light energy into chemical energy stored in glucose.",
    "¿Dónde está la estación de tren más cercana?",
    "def add(a, b): return a + b",
    "The mitochondria is the powerhouse of the cell, or so every biology textbook insists.",
    "Stock markets fell sharply after the central bank unexpectedly raised interest rates by half a point.",
    "42",
    "An unusually long sentence that keeps going, listing apples, oranges, pears, plums, cherries, "
    "apricots, figs, dates, grapes, melons, and many other fruits, simply to occupy more tokens "
    "than the other sentences in the batch do.",
    "Rotten tomatoes: a tedious, overlong film with no redeeming qualities whatsoever.",
    "Fresh: a sharp, funny and surprisingly moving portrait of a family in crisis.",
    "Is it possible to transfer money internationally without fees?",
    "The Treaty of Westphalia in 1648 ended the Thirty Years' War in the Holy Roman Empire.",
    "Emojis too 🙂👍 and URLs like https://example.com/path?query=1.",
    "Water boils at 100 degrees Celsius at sea level.",
    "Neural networks learn representations by gradient descent on a loss function.",
    " ".join(["Repetition past the token limit forces truncation."] * 40),
]


def row_cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


@pytest.fixture(scope="module")
def encoder(embedding_model: ExportedModel) -> TextEncoder:
    return TextEncoder(embedding_model.tokenizer_path, embedding_model.max_tokens)


def encode(encoder: TextEncoder, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Token ids and mask for one batch, zero-padded to its longest text, as the service does."""
    return pad_batch(encoder.encode(list(texts)))


@pytest.fixture(scope="module")
async def onnx_backend(embedding_model: ExportedModel) -> AsyncIterator[OnnxRuntimeBackend]:
    backend = OnnxRuntimeBackend(embedding_model.fp32_path)
    await backend.start()
    yield backend
    await backend.close()


@pytest.fixture(scope="module")
async def triton_backend(triton_embedding: TritonEndpoint) -> AsyncIterator[TritonBackend]:
    backend = TritonBackend(triton_embedding.url, triton_embedding.model_name)
    await backend.start()
    yield backend
    await backend.close()


@pytest.mark.parametrize("bounds", [(0, 20), (0, 1), (1, 7), (7, 20), (10, 11)])
async def test_triton_matches_onnxruntime(
    bounds: tuple[int, int],
    encoder: TextEncoder,
    onnx_backend: OnnxRuntimeBackend,
    triton_backend: TritonBackend,
) -> None:
    ids, mask = encode(encoder, SENTENCES[slice(*bounds)])
    expected = await onnx_backend.infer(ids, mask)
    actual = await triton_backend.infer(ids, mask)
    assert actual.dtype == np.float32
    assert actual.shape == expected.shape == (len(ids), 384)
    assert row_cosines(actual, expected).min() >= 0.9999
    np.testing.assert_allclose(np.linalg.norm(actual, axis=1), 1.0, atol=1e-5)


async def test_batches_beyond_model_limit_are_split(
    encoder: TextEncoder, onnx_backend: OnnxRuntimeBackend, triton_backend: TritonBackend
) -> None:
    # Short texts only: the point is the split, not the cost of 256-token rows on CPU.
    texts = (SENTENCES[:11] * 7)[: triton_backend.max_batch_size + 6]
    ids, mask = encode(encoder, texts)
    actual = await triton_backend.infer(ids, mask)
    expected = await onnx_backend.infer(ids, mask)
    assert actual.shape == (len(texts), 384)
    assert row_cosines(actual, expected).min() >= 0.9999


async def test_unknown_model_is_unavailable(triton_embedding: TritonEndpoint) -> None:
    backend = TritonBackend(triton_embedding.url, "no_such_model")
    with pytest.raises(BackendUnavailable, match="no_such_model"):
        await backend.start()


async def test_unreachable_server_is_unavailable() -> None:
    backend = TritonBackend(f"127.0.0.1:{free_port()}", "embedding_minilm", timeout_s=2.0)
    with pytest.raises(BackendUnavailable, match="cannot be reached"):
        await backend.start()


async def test_embedding_service_answers_through_triton_with_the_same_vectors(
    triton_embedding: TritonEndpoint, embedding_client: EmbeddingClient
) -> None:
    flags = ["--backend", "triton", "--triton-url", triton_embedding.url, "--triton-model", triton_embedding.model_name]
    with service_process("embedding", [*flags, "--no-fast"]) as service:
        async with EmbeddingClient(service.address, timeout_s=60) as client:
            models = await client.list_models()
            through_triton = await client.embed(SENTENCES)
    assert [m.backend for m in models] == ["triton"]
    in_process = await embedding_client.embed(SENTENCES)  # the ONNX Runtime service
    assert row_cosines(through_triton.vectors, in_process.vectors).min() >= 0.9999
    assert through_triton.truncated == in_process.truncated and through_triton.truncated[-1]
