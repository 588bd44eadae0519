"""Trained models in a directory (a local cache or a shared volume): the core's ModelStore."""

from __future__ import annotations

from pathlib import Path

from services.multilabel.core.bundle import MANIFEST, StoredMultiLabelModel, models_root


class DirectoryModelStore:
    def __init__(self, models_dir: Path) -> None:
        self.root = models_root(models_dir)

    def has(self, name: str) -> bool:
        """Whether a complete version of ``name`` is published (its manifest is written last)."""
        folder = self.root / name
        return folder.is_dir() and any((version / MANIFEST).is_file() for version in folder.iterdir())

    def load_all(self) -> dict[str, dict[str, StoredMultiLabelModel]]:
        """name → version → model, for every complete version."""
        found: dict[str, dict[str, StoredMultiLabelModel]] = {}
        if not self.root.is_dir():
            return found
        for name_dir in sorted(p for p in self.root.iterdir() if p.is_dir()):
            versions = {
                v.name: StoredMultiLabelModel(v) for v in sorted(name_dir.iterdir()) if (v / MANIFEST).is_file()
            }
            if versions:
                found[name_dir.name] = versions
        return found
