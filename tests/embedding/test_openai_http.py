"""The embedding service's OpenAI-compatible HTTP API through the official openai client: the gRPC
face's vectors and token counts, OpenAI's error shapes, TEI's timing headers, tokens and TLS."""

from __future__ import annotations

import base64
import ssl
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import openai
import pytest

from services.common.net import free_port
from services.embedding.bundle import MODEL_NAME
from services.embedding.client import EmbeddingClient
from services.offline.datasets import rotten_tomatoes
from services.runtime.config import ServiceSettings
from services.runtime.security import hash_token, new_token
from services.supervisor import RunningService, service_process
from tests.conftest import TEST_FLAGS, TEST_MAX_TEXTS
from tests.runtime.pki import CertificateAuthority

#: The exact tier only: the fast tier's start-up parity check would slow every start.
HTTP_FLAGS = [*TEST_FLAGS, "--no-fast"]
TIMING_HEADERS = ("x-tokenization-time", "x-queue-time", "x-inference-time", "x-total-time")


def http_flags() -> list[str]:
    return [*HTTP_FLAGS, "--http-port", str(free_port())]


def base_url(service: RunningService, scheme: str = "http") -> str:
    return f"{scheme}://127.0.0.1:{service.settings.http_port}/v1"  # type: ignore[attr-defined]


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


@pytest.fixture(scope="module")
def http_service(embedding_model: object) -> Iterator[RunningService]:
    with service_process("embedding", http_flags()) as service:
        yield service


@pytest.fixture(scope="module")
async def client(http_service: RunningService) -> AsyncIterator[openai.AsyncOpenAI]:
    # No retries: a refusal must surface as the first answer, not after back-offs.
    url = base_url(http_service)
    async with openai.AsyncOpenAI(base_url=url, api_key="unused", max_retries=0, timeout=60) as c:
        yield c


@pytest.fixture(scope="module")
async def grpc_client(http_service: RunningService) -> AsyncIterator[EmbeddingClient]:
    async with EmbeddingClient(http_service.address, timeout_s=60) as c:
        yield c


@pytest.fixture(scope="module")
def sentences() -> list[str]:
    return [row.text for row in rotten_tomatoes(64, seed=3)]


def vectors_of(response: Any) -> np.ndarray:
    """The response's vectors in order; base64 ones decoded as OpenAI documents them."""
    assert [item.index for item in response.data] == list(range(len(response.data)))
    embeddings = [item.embedding for item in response.data]
    if isinstance(embeddings[0], str):
        return np.stack([np.frombuffer(base64.b64decode(e), dtype="<f4") for e in embeddings])
    return np.asarray(embeddings, dtype=np.float32)


@pytest.mark.parametrize("encoding_format", ["client default", "float", "base64"])
async def test_openai_client_gets_the_grpc_vectors_and_token_counts(
    client: openai.AsyncOpenAI, grpc_client: EmbeddingClient, sentences: list[str], encoding_format: str
) -> None:
    """The client's default asks for base64 and decodes it; "float" and "base64" it passes through."""
    options = {} if encoding_format == "client default" else {"encoding_format": encoding_format}
    response = await client.embeddings.create(model=MODEL_NAME, input=sentences, **options)
    expected = await grpc_client.embed(sentences)
    vectors = vectors_of(response)
    assert vectors.shape == (len(sentences), 384) and response.model == MODEL_NAME
    assert cosines(vectors, expected.vectors).min() >= 0.9999
    assert response.usage.prompt_tokens == response.usage.total_tokens == sum(expected.token_counts)


async def test_a_single_string_and_the_default_model(client: openai.AsyncOpenAI) -> None:
    response = await client.embeddings.create(model="", input="hello", encoding_format="float")
    assert response.model == MODEL_NAME and len(response.data) == 1
    assert np.linalg.norm(response.data[0].embedding) == pytest.approx(1.0, abs=1e-5)
    assert response.usage.prompt_tokens == 3  # [CLS] hello [SEP], as gRPC counts


async def test_models_lists_what_the_service_serves(client: openai.AsyncOpenAI) -> None:
    page = await client.models.list()
    assert [(m.id, m.object, m.owned_by) for m in page.data] == [(MODEL_NAME, "model", "rosemesh")]


async def test_timing_headers_say_where_the_time_went(
    client: openai.AsyncOpenAI, sentences: list[str]
) -> None:
    raw = await client.embeddings.with_raw_response.create(model=MODEL_NAME, input=sentences[:8])
    timing = {name: float(raw.headers[name]) for name in TIMING_HEADERS}
    assert all(ms >= 0 for ms in timing.values())
    assert timing["x-inference-time"] <= timing["x-total-time"]
    assert len(raw.parse().data) == 8


BAD_REQUESTS: dict[str, tuple[dict[str, Any], str, str]] = {
    "empty list": ({"input": []}, "input", "at least one text"),
    "empty string": ({"input": ["fine", ""]}, "input[1]", "must not be empty"),
    "unknown model": ({"input": ["hi"], "model": "gpt-9"}, "model", "unknown model 'gpt-9'"),
    "wrong dimensions": ({"input": ["hi"], "dimensions": 256}, "dimensions", "384-dimensional"),
    "token arrays": ({"input": [[101, 7592, 102]]}, "input", "token arrays are not supported"),
    "too many texts": (
        {"input": ["x"] * (TEST_MAX_TEXTS + 1)},
        "input",
        f"exceed the limit of {TEST_MAX_TEXTS}",
    ),
}


@pytest.mark.parametrize("case", list(BAD_REQUESTS))
async def test_bad_input_is_a_400_naming_the_field(
    http_service: RunningService, client: openai.AsyncOpenAI, case: str
) -> None:
    request, field, phrase = BAD_REQUESTS[case]
    with pytest.raises(openai.BadRequestError) as caught:
        await client.embeddings.create(**{"model": MODEL_NAME, **request})
    error = caught.value
    assert error.status_code == 400 and error.type == "invalid_request_error"
    assert error.param == field and phrase in error.message
    # ...and the service keeps serving.
    assert len((await client.embeddings.create(model=MODEL_NAME, input="still here")).data) == 1
    assert http_service.process.poll() is None


#: The service's --max-message-bytes, which bounds HTTP bodies too.
BODY_LIMIT = ServiceSettings.model_fields["max_message_bytes"].default
#: Bodies the openai client would not send, posted as they are.
RAW_BAD_BODIES: dict[str, tuple[bytes, int, str | None, str]] = {
    "malformed JSON": (b'{"input": ["unterminated', 400, "body", "not valid JSON"),
    "not an object": (b'["hello"]', 400, "body", "must be a JSON object"),
    "no input": (b'{"model": "all-MiniLM-L6-v2"}', 400, "input", "is required"),
    "a number for input": (b'{"input": 7}', 400, "input", "must be a string or a list of strings"),
    "an unknown encoding": (b'{"input": "hi", "encoding_format": "i8"}', 400, "encoding_format", "one of"),
    "a string for dimensions": (b'{"input": "hi", "dimensions": "384"}', 400, "dimensions", "be an integer"),
    "over the body limit": (b'{"input": "' + b"a" * BODY_LIMIT + b'"}', 413, None, "exceeded"),
}


@pytest.mark.parametrize("case", list(RAW_BAD_BODIES))
async def test_malformed_bodies_get_openai_shaped_errors(http_service: RunningService, case: str) -> None:
    body, status, param, phrase = RAW_BAD_BODIES[case]
    url, headers = f"{base_url(http_service)}/embeddings", {"Content-Type": "application/json"}
    async with aiohttp.ClientSession() as session:
        async with session.post(url, data=body, headers=headers) as response:
            assert response.status == status
            error = (await response.json())["error"]
        assert error["type"] == "invalid_request_error" and error["param"] == param
        assert phrase in error["message"]
        async with session.post(url, json={"input": "fine"}) as response:
            assert response.status == 200


async def test_tokens_and_tls_guard_the_http_api(embedding_model: object, tmp_path: Path) -> None:
    """With the production profile's security: HTTPS on the gRPC port's certificate, Bearer tokens."""
    ca = CertificateAuthority(tmp_path, "http-ca")
    issued = ca.issue("embedding", "embedding")
    token = new_token()
    tokens_file = tmp_path / "tokens"
    tokens_file.write_text(f"acme {hash_token(token)}\n")
    security = ["--tls-cert-file", str(issued.cert), "--tls-key-file", str(issued.key), "--tls-ca-file",
                str(ca.path), "--auth-tokens-file", str(tokens_file)]  # fmt: skip
    trusted = ssl.create_default_context(cafile=str(ca.path))
    with service_process("embedding", [*http_flags(), *security]) as service:
        url = base_url(service, "https")

        def openai_client(key: str) -> openai.AsyncOpenAI:
            http_client = openai.DefaultAsyncHttpxClient(verify=trusted)
            return openai.AsyncOpenAI(base_url=url, api_key=key, max_retries=0, http_client=http_client)

        async with openai_client("not-a-token") as wrong:
            with pytest.raises(openai.AuthenticationError) as caught:
                await wrong.embeddings.create(model=MODEL_NAME, input="hi")
            assert caught.value.code == "invalid_api_key" and "invalid token" in caught.value.message
        async with aiohttp.ClientSession() as session:
            async with session.post(f"{url}/embeddings", json={"input": "hi"}, ssl=trusted) as response:
                assert response.status == 401
                assert "missing credentials" in (await response.json())["error"]["message"]
            async with session.get(f"{url.removesuffix('/v1')}/health", ssl=trusted) as response:
                assert response.status == 200  # open, like gRPC health
        async with openai_client(token) as right:
            response = await right.embeddings.create(model=MODEL_NAME, input=["hello", "world"])
            assert vectors_of(response).shape == (2, 384)
