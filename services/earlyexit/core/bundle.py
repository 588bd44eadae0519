"""Trained early-exit models on disk: ``<models_dir>/earlyexit/<name>/<version>/``, each version
described by ``manifest.json``, published and pointed at as ``services.common.model_versions``
lays out. Artefacts are never committed.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from pydantic import BaseModel, Field

from services.common.model_versions import ModelVersions
from services.earlyexit.core.flops import EncoderShape
from services.earlyexit.core.policy import ExitMode, ExitPolicy, ModelKind

MANIFEST = "manifest.json"
EXIT_TABLE = "exit_table.npy"
HASHEE_GRAPH = "hashee.onnx"
PLAIN_GRAPH = "plain.onnx"
#: The trained PyTorch weights beside the graphs, and the encoder's shape they fit: what
#: integrated gradients differentiates.
TORCH_WEIGHTS = "weights.safetensors"
ENCODER_CONFIG = "config.json"
#: The one graph of each single-graph kind.
SINGLE_GRAPHS = {ModelKind.HASHEE: HASHEE_GRAPH, ModelKind.PLAIN: PLAIN_GRAPH}


def models_root(models_dir: Path) -> Path:
    return models_dir / "earlyexit"


def segment_file(index: int) -> str:
    """File of 0-based segment ``index``: layer index+1 and its exit head."""
    return f"segment_{index + 1}.onnx"


class OperatingPoint(BaseModel):
    policy: dict[str, object]
    accuracy: float
    mean_layers: float
    mean_flops: float
    throughput: float = 0.0  # texts/s; 0 when not measured

    @property
    def exit_policy(self) -> ExitPolicy:
        return ExitPolicy.from_dict(self.policy)


class ModelManifest(BaseModel):
    name: str
    version: str
    kind: ModelKind
    base_model: str
    dataset: str
    labels: list[str]
    num_layers: int
    hidden: int
    ffn: int
    max_tokens: int
    default_policy: dict[str, object]
    token_hash: str | None = None  # "frequency" or "random", HashEE only
    #: Test accuracy of the plain fine-tuned classifier trained the same way (multi-exit only).
    baseline_accuracy: float | None = None
    operating_points: list[OperatingPoint] = Field(default_factory=list)
    training: dict[str, object] = Field(default_factory=dict)

    @property
    def shape(self) -> EncoderShape:
        return EncoderShape(self.hidden, self.ffn, len(self.labels))

    @property
    def policy(self) -> ExitPolicy:
        return ExitPolicy.from_dict(self.default_policy)

    @property
    def modes(self) -> tuple[ExitMode, ...]:
        from services.earlyexit.core.policy import MODES_BY_KIND

        return MODES_BY_KIND[self.kind]


class StoredModel:
    """A model folder: its manifest and the paths of its graphs."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.manifest = ModelManifest.model_validate_json((directory / MANIFEST).read_text())

    @property
    def name(self) -> str:
        return self.manifest.name

    @property
    def graphs(self) -> list[Path]:
        if self.manifest.kind.single_graph:
            return [self.directory / SINGLE_GRAPHS[self.manifest.kind]]
        return [self.directory / segment_file(i) for i in range(self.manifest.num_layers)]

    @property
    def tokenizer_path(self) -> Path:
        return self.directory / "tokenizer.json"

    @property
    def has_torch_weights(self) -> bool:
        return (self.directory / TORCH_WEIGHTS).is_file() and (self.directory / ENCODER_CONFIG).is_file()

    def exit_table(self) -> np.ndarray:
        return np.load(self.directory / EXIT_TABLE)


def write_manifest(directory: Path, manifest: ModelManifest) -> None:
    """Atomically: a reader never sees a half-written manifest."""
    temporary = directory / f".{MANIFEST}.tmp"
    temporary.write_text(json.dumps(manifest.model_dump(mode="json"), indent=2))
    temporary.replace(directory / MANIFEST)


def list_models(models_dir: Path, pins: dict[str, str] | None = None) -> list[StoredModel]:
    """The servable models, each at its pinned version or else its current one; a pinned version
    not yet published is left out."""
    versions = ModelVersions(models_root(models_dir))
    pins = pins or {}
    stored = []
    for name in sorted(set(versions.names()) | pins.keys()):
        version = versions.resolve(name, pins.get(name))
        if version is not None:
            stored.append(StoredModel(versions.path(name, version)))
    return stored
