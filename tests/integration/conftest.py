"""Real embedding servers on 127.0.0.1, started as child processes."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from services.embedding.client import EmbeddingClient
from services.embedding.export import ExportedModel
from services.supervisor import RunningService, service_process

# Small limits so that the tests can reach them cheaply.
TEST_MAX_TEXTS = 64
TEST_FLAGS = ["--max-texts", str(TEST_MAX_TEXTS), "--grace-period-s", "20"]


@pytest.fixture(scope="session")
def embedding_service(embedding_model: ExportedModel) -> Iterator[RunningService]:
    with service_process("embedding", TEST_FLAGS) as service:
        yield service


@pytest.fixture(scope="session")
async def embedding_client(embedding_service: RunningService) -> AsyncIterator[EmbeddingClient]:
    async with EmbeddingClient(embedding_service.address, timeout_s=60) as client:
        yield client
