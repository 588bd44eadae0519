"""Real embedding servers on 127.0.0.1, started as child processes."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from services.earlyexit.train import TrainConfig, train_dataset
from services.embedding.client import EmbeddingClient
from services.embedding.export import ExportedModel
from services.multilabel.core.registry import StoredMultiLabelModel
from services.multilabel.train import ClassifierConfig, MetaConfig, train_multilabel
from services.supervisor import RunningService, service_process

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
    """A multi-exit and a HashEE model, briefly fine-tuned on real data, exported and measured."""
    directory = tmp_path_factory.mktemp("earlyexit-models")
    tiny = TrainConfig(epochs=1, train_limit=192, eval_limit=64)
    train_dataset(EARLYEXIT_MODEL, directory, ["multiexit", "hashee-frequency"], tiny)
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
