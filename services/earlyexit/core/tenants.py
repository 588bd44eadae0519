"""Classify with tenants' adapters on one shared backbone, many tenants in one batch.

Every row shares the backbone's layers, whatever its tenant. A Late Prompt Tuning row gets its
own tenant's generated prompt at its insertion layer, appended after the tokens and masked for
every other row; the layers below run once for the whole batch. A LoRA row carries its tenant's
low-rank query and value updates into every layer as per-row inputs of the shared graph (the
adapter weights stacked per batch, as Punica and S-LoRA do), zero for the other rows. So a row's
answer does not depend on who else is in the batch.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from services.common.batching import BatchingConfig, MicroBatcher
from services.common.errors import NotFound
from services.common.model_versions import ModelVersions
from services.common.tokens import EncodedText, TextEncoder, pad_batch
from services.earlyexit.core.adapters import (
    LORA_INPUTS,
    StoredAdapter,
    StoredBackbone,
    TenantAdapter,
    adapter_name,
    adapters_root,
    backbones_root,
    load_adapter,
)
from services.earlyexit.core.ports import BackboneGraphs

#: How long a replica trusts its view of an adapter's CURRENT pointer before reading it again.
POINTER_TTL_S = 1.0


def _row_updates(rows: int, width: int, groups: list[tuple[list[int], TenantAdapter]], layer: int) -> tuple[np.ndarray, ...]:
    """Each row's LoRA updates at ``layer``, zero-padded to the batch's highest rank (zero rows and
    columns add exactly nothing), and zero for rows without LoRA."""
    rank = max(adapter.rank for _, adapter in groups)
    shapes = [(rows, width, rank) if name.endswith("_a") else (rows, rank, width) for name in LORA_INPUTS]
    stacked = [np.zeros(shape, dtype=np.float32) for shape in shapes]
    for group, adapter in groups:
        for array, update in zip(stacked, adapter.lora(layer), strict=True):
            if array.shape[1] == width:
                array[group, :, : adapter.rank] = update
            else:
                array[group, : adapter.rank] = update
    return tuple(stacked)


def adapter_logits(
    graphs: BackboneGraphs, ids: np.ndarray, mask: np.ndarray, adapters: Sequence[TenantAdapter]
) -> list[np.ndarray]:
    """Each row's logits under its own adapter, the whole batch through the backbone at once."""
    hidden = graphs.embed(ids)
    rows, tokens, width = hidden.shape
    full_mask = mask
    by_adapter: dict[int, list[int]] = {}
    for row, adapter in enumerate(adapters):
        by_adapter.setdefault(id(adapter), []).append(row)
    first = {key: adapters[group[0]] for key, group in by_adapter.items()}
    lora_groups = [(by_adapter[key], adapter) for key, adapter in first.items() if adapter.rank]
    for layer in range(1, graphs.num_layers + 1):
        entering = [key for key, adapter in first.items() if adapter.insertion_layer == layer]
        if entering:
            length = max(first[key].prompt_length for key in entering)
            prompts = np.zeros((rows, length, width), dtype=hidden.dtype)
            prompt_mask = np.zeros((rows, length), dtype=mask.dtype)
            for key in entering:
                group, adapter = by_adapter[key], first[key]
                prompts[group, : adapter.prompt_length] = adapter.prompt(hidden[group, :tokens], mask[group])
                prompt_mask[group, : adapter.prompt_length] = 1
            hidden = np.concatenate([hidden, prompts], axis=1)
            full_mask = np.concatenate([full_mask, prompt_mask], axis=1)
        updates = _row_updates(rows, width, lora_groups, layer) if lora_groups else None
        hidden = graphs.layer(layer, hidden, full_mask, updates)
    logits: list[np.ndarray] = [np.empty(0)] * rows
    for key, group in by_adapter.items():
        for row, values in zip(group, first[key].logits(hidden[group, :tokens], mask[group]), strict=True):
            logits[row] = values
    return logits


@dataclass(frozen=True)
class TaskRow:
    """One text of one tenant's request, queued for a mixed batch."""

    encoded: EncodedText
    adapter: TenantAdapter


class AdapterCache:
    """Loaded adapters, least recently used first out past ``budget_bytes``: a cache of the
    shared store, which every replica reads the same way."""

    def __init__(self, models_dir: Path, budget_bytes: int) -> None:
        self.versions = ModelVersions(adapters_root(models_dir))
        self.budget_bytes = budget_bytes
        self._loaded: OrderedDict[tuple[str, str], TenantAdapter] = OrderedDict()
        self._pointers: dict[str, tuple[float, str | None]] = {}
        self._lock = threading.Lock()  # calls come from worker threads: a miss reads the disk
        self.loads = 0

    @property
    def nbytes(self) -> int:
        return sum(adapter.nbytes for adapter in self._loaded.values())

    def __len__(self) -> int:
        return len(self._loaded)

    def current_version(self, name: str) -> str | None:
        now = time.monotonic()
        seen = self._pointers.get(name)
        if seen is None or now - seen[0] > POINTER_TTL_S:
            seen = (now, self.versions.current(name))
            self._pointers[name] = seen
        return seen[1]

    def get(self, tenant: str, task: str) -> TenantAdapter:
        with self._lock:
            return self._get(tenant, task)

    def _get(self, tenant: str, task: str) -> TenantAdapter:
        name = adapter_name(tenant, task)
        version = self.current_version(name)
        if version is None:
            raise NotFound(f"tenant {tenant!r} has no adapted task {task!r}; train one with Adapt")
        key = (name, version)
        adapter = self._loaded.get(key)
        if adapter is None:
            adapter = load_adapter(StoredAdapter(self.versions.path(name, version)))
            self.loads += 1
            self._loaded[key] = adapter
            while len(self._loaded) > 1 and self.nbytes > self.budget_bytes:
                self._loaded.popitem(last=False)
        self._loaded.move_to_end(key)
        return adapter


class TenantClassifier:
    """Tenants' tasks on the shared backbone; concurrent requests are batched together."""

    def __init__(
        self,
        backbone: StoredBackbone,
        cache: AdapterCache,
        run_graphs: Callable[[Callable[[BackboneGraphs], list[np.ndarray]]], Awaitable[list[np.ndarray]]],
        batching: BatchingConfig,
    ) -> None:
        self.backbone = backbone
        self.cache = cache
        self.encoder = TextEncoder(backbone.tokenizer_path, backbone.manifest.max_tokens)
        self._run_graphs = run_graphs
        self.batcher: MicroBatcher[TaskRow, np.ndarray] = MicroBatcher(
            "adapters", self._run_batch, batching, size_of=lambda row: len(row.encoded.ids)
        )

    async def _run_batch(self, rows: list[TaskRow]) -> list[np.ndarray]:
        ids, mask = pad_batch([row.encoded for row in rows])
        adapters = [row.adapter for row in rows]
        return await self._run_graphs(lambda graphs: adapter_logits(graphs, ids, mask, adapters))

    def adapter(self, tenant: str, task: str) -> TenantAdapter:
        adapter = self.cache.get(tenant, task)
        if adapter.manifest.backbone_version != self.backbone.manifest.version:
            raise NotFound(
                f"{tenant}.{task} was trained on backbone {adapter.manifest.backbone_version}, "
                f"this service runs {self.backbone.manifest.version}; adapt it again"
            )
        return adapter

    async def classify(
        self, texts: Sequence[str], tenant: str, task: str
    ) -> tuple[TenantAdapter, list[EncodedText], list[np.ndarray]]:
        adapter = await asyncio.to_thread(self.adapter, tenant, task)
        encoded = self.encoder.encode(list(texts))
        logits = await self.batcher.submit([TaskRow(e, adapter) for e in encoded])
        return adapter, encoded, logits


def current_backbone(models_dir: Path, base_model: str) -> StoredBackbone | None:
    versions = ModelVersions(backbones_root(models_dir))
    version = versions.current(base_model)
    return StoredBackbone(versions.path(base_model, version)) if version else None
