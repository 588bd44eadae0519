"""Trained models in a directory (a local cache or a shared volume): the core's ModelStore."""

from __future__ import annotations

from pathlib import Path

from services.common.model_versions import ModelVersions
from services.multilabel.core.bundle import ServedModel, StoredMultiLabelModel, models_root


class DirectoryModelStore:
    def __init__(self, models_dir: Path) -> None:
        self.versions = ModelVersions(models_root(models_dir))
        # Published versions never change, so each is read once.
        self._loaded: dict[tuple[str, str], StoredMultiLabelModel] = {}

    def resolve(self, name: str, pinned: str | None = None) -> str | None:
        return self.versions.resolve(name, pinned)

    def load(self, pins: dict[str, str]) -> dict[str, ServedModel]:
        served: dict[str, ServedModel] = {}
        for name in sorted(set(self.versions.names()) | pins.keys()):
            default = self.resolve(name, pins.get(name))
            if default is None:
                continue
            served[name] = ServedModel(name, default, {v: self._model(name, v) for v in self.versions.versions(name)})
        return served

    def _model(self, name: str, version: str) -> StoredMultiLabelModel:
        key = (name, version)
        if key not in self._loaded:
            self._loaded[key] = StoredMultiLabelModel(self.versions.path(name, version))
        return self._loaded[key]
