"""Trained multi-label models on disk: ``<models_dir>/multilabel/<name>/<version>/``, published
and pointed at as ``services.common.model_versions`` lays out.

Each version holds ``manifest.json`` (labels, the three policies with their thresholds, loss
weights and test metrics) and ``classifiers.npz`` (the unweighted and the meta-weighted
classifier).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import numpy as np
from pydantic import BaseModel

from services.common.model_versions import ModelVersions
from services.multilabel.core.scoring import MlpClassifier

MANIFEST = "manifest.json"
ARRAYS = "classifiers.npz"


class Policy(StrEnum):
    FIXED = "fixed"  # unweighted classifier, 0.5 everywhere
    TUNED = "tuned"  # unweighted classifier, thresholds tuned on dev
    META = "meta"  # meta-weighted classifier, meta-learned thresholds


#: Which stored classifier each policy predicts with.
CLASSIFIER_OF = {Policy.FIXED: "unweighted", Policy.TUNED: "unweighted", Policy.META: "meta"}


class PolicyMetrics(BaseModel):
    micro_f1: float
    macro_f1: float
    micro_precision: float
    micro_recall: float
    example_count: int


class PolicyRecord(BaseModel):
    thresholds: list[float]
    loss_weights: list[float]
    test_metrics: PolicyMetrics


class MultiLabelManifest(BaseModel):
    name: str
    version: str
    dataset: str
    encoder: str
    labels: list[str]
    default_policy: Policy = Policy.META
    policies: dict[Policy, PolicyRecord]
    training: dict[str, object] = {}


class StoredMultiLabelModel:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.manifest = MultiLabelManifest.model_validate_json((directory / MANIFEST).read_text())
        with np.load(directory / ARRAYS) as arrays:
            self.classifiers = {
                kind: MlpClassifier(
                    **{name: arrays[f"{kind}.{name}"] for name in MlpClassifier.__dataclass_fields__}
                )
                for kind in ("unweighted", "meta")
            }

    def classifier(self, policy: Policy) -> MlpClassifier:
        return self.classifiers[CLASSIFIER_OF[policy]]

    def thresholds(self, policy: Policy) -> np.ndarray:
        return np.asarray(self.manifest.policies[policy].thresholds)


@dataclass(frozen=True)
class ServedModel:
    name: str
    #: What a request naming no version gets: the pinned version, else the current one.
    default_version: str
    versions: dict[str, StoredMultiLabelModel]


def models_root(models_dir: Path) -> Path:
    return models_dir / "multilabel"


def save_model(
    models_dir: Path, manifest: MultiLabelManifest, classifiers: dict[str, MlpClassifier]
) -> StoredMultiLabelModel:
    """Publish a new version and make it current."""
    versions = ModelVersions(models_root(models_dir))
    arrays = {
        f"{kind}.{name}": array for kind, c in classifiers.items() for name, array in c.arrays().items()
    }
    with versions.publish(manifest.name, manifest.version) as staging:
        np.savez(staging / ARRAYS, **arrays)
        (staging / MANIFEST).write_text(json.dumps(manifest.model_dump(mode="json"), indent=2))
    return StoredMultiLabelModel(versions.path(manifest.name, manifest.version))
