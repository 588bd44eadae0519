"""Fixtures shared across the test suite: exported and trained models, real services on 127.0.0.1."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from services.adapters.tritonserver import (
    TEMPLATES_DIR,
    TritonServer,
    render_model_repository,
    triton_unavailable_reason,
)
from services.earlyexit.offline.train import TrainConfig, train_dataset
from services.embedding.bundle import ExportedModel
from services.embedding.client import EmbeddingClient
from services.embedding.offline.export import ensure_exported
from services.multilabel.core.bundle import StoredMultiLabelModel
from services.multilabel.offline.train import ClassifierConfig, MetaConfig, train_multilabel
from services.runtime.config import default_models_dir
from services.supervisor import RunningService, service_process

TRITON_EMBEDDING_MODEL = "embedding_minilm"


@dataclass(frozen=True)
class TritonEndpoint:
    """A running tritonserver and the model it serves, e.g. for ``--triton-url``/``--triton-model``."""

    url: str
    model_name: str
    server: TritonServer


@pytest.fixture(scope="session")
def embedding_model() -> ExportedModel:
    """The fp32 export, in the shared models cache so every test and run reuses it."""
    return ensure_exported(default_models_dir(), fast=False)


@pytest.fixture(scope="session")
def triton_embedding(
    embedding_model: ExportedModel, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TritonEndpoint]:
    """The real tritonserver from the nvidia-pytriton wheel, serving the local embedding profile."""
    if reason := triton_unavailable_reason():
        pytest.skip(f"Triton is not usable here: {reason}")
    root = tmp_path_factory.mktemp("triton")
    repository = root / "models"
    render_model_repository(
        repository,
        TEMPLATES_DIR / "embedding",
        TRITON_EMBEDDING_MODEL,
        {"model.onnx": embedding_model.fp32_path},
        "local",
    )
    with TritonServer(repository, root / "server") as server:
        yield TritonEndpoint(server.grpc_url, TRITON_EMBEDDING_MODEL, server)

# Small limits so that the tests can reach them cheaply.
TEST_MAX_TEXTS = 64
TEST_FLAGS = ["--max-texts", str(TEST_MAX_TEXTS), "--grace-period-s", "20"]
EARLYEXIT_MODEL = "rotten_tomatoes"
MULTILABEL_MODEL = "toxicity"


@pytest.fixture(scope="session")
def embedding_service(embedding_model: ExportedModel) -> Iterator[RunningService]:
    with service_process("embedding", TEST_FLAGS) as service:
        yield service


@pytest.fixture(scope="session")
async def embedding_client(embedding_service: RunningService) -> AsyncIterator[EmbeddingClient]:
    async with EmbeddingClient(embedding_service.address, timeout_s=60) as client:
        yield client


@pytest.fixture(scope="session")
def earlyexit_models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A multi-exit, a plain and a HashEE model, briefly fine-tuned on real data, exported and measured."""
    directory = tmp_path_factory.mktemp("earlyexit-models")
    tiny = TrainConfig(epochs=1, train_limit=192, eval_limit=64)
    train_dataset(EARLYEXIT_MODEL, directory, ["multiexit", "plain", "hashee-frequency"], tiny)
    return directory


@pytest.fixture(scope="session")
def multilabel_trained(
    embedding_service: RunningService, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, StoredMultiLabelModel]:
    """A multi-label model trained in seconds on real data, and the models directory holding it."""
    directory = tmp_path_factory.mktemp("multilabel-models")
    quick = {
        "classifier_config": ClassifierConfig(epochs=20),
        "meta_config": MetaConfig(updates=2, episodes_per_update=2),
    }
    return directory, train_multilabel(MULTILABEL_MODEL, directory, embedding_service.address, **quick)
