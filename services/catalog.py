"""The services rosemesh can run, imported lazily so the CLI starts fast."""

from __future__ import annotations

import importlib

from services.runtime.server import Service

# name -> "module:ServiceClass"; `rosemesh up` starts them in this order.
SERVICES: dict[str, str] = {
    "embedding": "services.embedding.server:EmbeddingService",
    "experience": "services.experience.server:ExperienceService",
    "earlyexit": "services.earlyexit.server:EarlyExitService",
    "multilabel": "services.multilabel.server:MultiLabelService",
    "critique": "services.critique.server:CritiqueService",
}


def service_class(name: str) -> type[Service]:
    if name not in SERVICES:
        raise KeyError(f"unknown service {name!r}; known: {', '.join(SERVICES)}")
    module, _, attribute = SERVICES[name].partition(":")
    return getattr(importlib.import_module(module), attribute)
