"""Tenant adapters on one shared frozen backbone, as the model store holds them.

- The backbone: ``<models_dir>/backbones/<base model>/<version>/``, the base model's embeddings
  and each layer as its own graph, so that prompts can enter between layers.
- An adapter: ``<models_dir>/adapters/<tenant>.<task>/<version>/``, a manifest and the adapter's
  weights (``weights.npz``), published and pointed at like every other model
  (``services.common.model_versions``); immutable once published.

The Late Prompt Tuning arithmetic that runs per tenant (the prompt generator and the head) is
small, so it runs here in numpy; the backbone's layers run on the backend.
"""

from __future__ import annotations

import json
from enum import Enum
from pathlib import Path

import numpy as np
from pydantic import BaseModel, Field

from services.common.model_versions import ModelVersions
from services.common.tenants import TENANT_PATTERN, TENANT_RULE

MANIFEST = "manifest.json"
WEIGHTS = "weights.npz"
EMBEDDINGS_GRAPH = "embeddings.onnx"
#: Task names follow the tenant rule, so "<tenant>.<task>" is unambiguous.
TASK_PATTERN = TENANT_PATTERN


class AdaptMethod(str, Enum):
    LPT = "lpt"
    LORA = "lora"


def backbones_root(models_dir: Path) -> Path:
    return models_dir / "backbones"


def adapters_root(models_dir: Path) -> Path:
    return models_dir / "adapters"


def adapter_name(tenant: str, task: str) -> str:
    """The store's name of a tenant's task; neither part may hold a dot, so it is unambiguous."""
    if not TENANT_PATTERN.match(tenant):
        raise ValueError(f"tenant {tenant!r} {TENANT_RULE}")
    if not TASK_PATTERN.match(task):
        raise ValueError(f"task {task!r} {TENANT_RULE}")
    return f"{tenant}.{task}"


def layer_graph(layer: int) -> str:
    """The graph of 1-based backbone layer ``layer``."""
    return f"layer_{layer}.onnx"


def lora_layer_graph(layer: int) -> str:
    """The same layer taking each row's low-rank query and value updates (``LORA_INPUTS``)."""
    return f"layer_{layer}_lora.onnx"


#: The projections a LoRA adapter may update: those the shared LoRA layer graphs take.
LORA_MODULES = ("query", "value")
#: Per-row inputs of a LoRA layer graph: (rows, in, rank) A and (rows, rank, out) scaled B.
LORA_INPUTS = ("query_a", "query_b", "value_a", "value_b")


class BackboneManifest(BaseModel):
    base_model: str
    version: str
    num_layers: int
    hidden: int
    ffn: int
    max_tokens: int
    #: Parameters of the whole backbone, to compare with what each adapter adds.
    parameters: int


class StoredBackbone:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.manifest = BackboneManifest.model_validate_json((directory / MANIFEST).read_text())

    @property
    def embeddings_graph(self) -> Path:
        return self.directory / EMBEDDINGS_GRAPH

    def layer_graph(self, layer: int) -> Path:
        return self.directory / layer_graph(layer)

    def lora_layer_graph(self, layer: int) -> Path:
        return self.directory / lora_layer_graph(layer)

    @property
    def tokenizer_path(self) -> Path:
        return self.directory / "tokenizer.json"


class AdapterManifest(BaseModel):
    tenant: str
    task: str
    version: str
    method: AdaptMethod
    base_model: str
    backbone_version: str
    labels: list[str]
    #: LPT: the 1-based layer the prompt enters before, and its length.
    insertion_layer: int = 0
    prompt_length: int = 0
    generator_size: int = 0
    #: LoRA: the rank and the adapted projections.
    rank: int = 0
    target_modules: list[str] = Field(default_factory=list)
    parameters: int
    dev_accuracy: float
    training: dict[str, object] = Field(default_factory=dict)


class StoredAdapter:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.manifest = AdapterManifest.model_validate_json((directory / MANIFEST).read_text())

    def weights(self) -> dict[str, np.ndarray]:
        with np.load(self.directory / WEIGHTS) as archive:
            return {name: archive[name] for name in archive.files}


def write_json(path: Path, model: BaseModel) -> None:
    """Atomically: a reader never sees half a file."""
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(json.dumps(model.model_dump(mode="json"), indent=2))
    temporary.replace(path)


def mean_pool(hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
    weights = mask.astype(hidden.dtype)[:, :, None]
    return (hidden * weights).sum(axis=1) / weights.sum(axis=1)


def _transposed(weight: np.ndarray) -> np.ndarray:
    """A torch Linear's (out, in) weight as the (in, out) matrix rows multiply, contiguous."""
    return np.ascontiguousarray(weight.T)


class TenantAdapter:
    """One tenant's adapter as served: its head, and what it changes in the shared backbone."""

    #: LPT: the 1-based layer its prompt enters before (0: none).
    insertion_layer = 0
    prompt_length = 0
    #: LoRA: the rank of its query and value updates (0: none).
    rank = 0

    def __init__(self, stored: StoredAdapter) -> None:
        self.manifest = stored.manifest
        w = stored.weights()
        self.pooler_w, self.pooler_b = _transposed(w["head.pooler.weight"]), w["head.pooler.bias"]
        self.classifier_w, self.classifier_b = _transposed(w["head.classifier.weight"]), w["head.classifier.bias"]
        self.nbytes = sum(a.nbytes for a in w.values())
        self._load(w)

    def _load(self, weights: dict[str, np.ndarray]) -> None:
        """Keep what the method needs of ``weights`` (a tenant's memory is what it keeps)."""

    def logits(self, hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """The head on the top layer's real tokens (prompt positions excluded)."""
        summary = np.tanh(mean_pool(hidden, mask) @ self.pooler_w + self.pooler_b)
        return summary @ self.classifier_w + self.classifier_b

    def prompt(self, hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def lora(self, layer: int) -> tuple[np.ndarray, ...]:
        raise NotImplementedError


class LatePromptAdapter(TenantAdapter):
    """A prompt generator before one layer (see ``services.earlyexit.offline.lpt``)."""

    def _load(self, w: dict[str, np.ndarray]) -> None:
        self.insertion_layer = self.manifest.insertion_layer
        self.prompt_length = self.manifest.prompt_length
        self.static = w["generator.static"]
        self.down_w, self.down_b = _transposed(w["generator.down.weight"]), w["generator.down.bias"]
        self.up_w, self.up_b = _transposed(w["generator.up.weight"]), w["generator.up.bias"]

    def prompt(self, hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """(rows, tokens, hidden) states before the insertion layer → (rows, length, hidden)."""
        generated = np.tanh(mean_pool(hidden, mask) @ self.down_w + self.down_b) @ self.up_w + self.up_b
        return generated.reshape(len(hidden), self.prompt_length, -1) + self.static


class LoraAdapter(TenantAdapter):
    """Low-rank query and value updates in every layer (see ``services.earlyexit.offline.lora``)."""

    def _load(self, w: dict[str, np.ndarray]) -> None:
        self.rank = self.manifest.rank
        self._weights = {key: array for key, array in w.items() if key.startswith("layers.")}
        self._updates: dict[int, tuple[np.ndarray, ...]] = {}
    def _update(self, layer: int, name: str) -> np.ndarray:
        module, part = name.split("_")
        found = self._weights.get(f"layers.{layer}.{module}.{part}")
        if found is not None:
            return found
        width = self.pooler_w.shape[0]
        return np.zeros((width, self.rank) if part == "a" else (self.rank, width), dtype=np.float32)

    def lora(self, layer: int) -> tuple[np.ndarray, ...]:
        if layer not in self._updates:  # a projection it does not adapt updates by zero
            self._updates[layer] = tuple(self._update(layer, name) for name in LORA_INPUTS)
        return self._updates[layer]


def zero_lora_inputs(rows: int, width: int, rank: int) -> tuple[np.ndarray, ...]:
    """Per-row LoRA inputs (``LORA_INPUTS``) of ``rank``, all zero: A is width × rank, B rank × width."""
    return tuple(
        np.zeros((rows, width, rank) if name.endswith("_a") else (rows, rank, width), dtype=np.float32)
        for name in LORA_INPUTS
    )


def load_adapter(stored: StoredAdapter) -> TenantAdapter:
    kinds = {AdaptMethod.LPT: LatePromptAdapter, AdaptMethod.LORA: LoraAdapter}
    return kinds[stored.manifest.method](stored)


def list_adapters(models_dir: Path, tenant: str | None = None) -> list[StoredAdapter]:
    """The current version of every adapter, or of one tenant's."""
    versions = ModelVersions(adapters_root(models_dir))
    stored = []
    for name in versions.names():
        if tenant is not None and name.partition(".")[0] != tenant:
            continue
        version = versions.current(name)
        if version is not None:
            stored.append(StoredAdapter(versions.path(name, version)))
    return stored
