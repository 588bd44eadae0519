"""Fixtures shared across the test suite."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from services.embedding.export import ExportedModel, ensure_exported
from services.runtime.config import default_models_dir
from services.runtime.triton import (
    TEMPLATES_DIR,
    TritonServer,
    render_model_repository,
    triton_unavailable_reason,
)

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
    return ensure_exported(default_models_dir(), int8=False)


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
