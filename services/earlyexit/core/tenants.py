"""Classify with tenants' adapters on one shared backbone, many tenants in one batch.

Every row shares the backbone's layers, whatever its tenant. A Late Prompt Tuning row gets its
own tenant's generated prompt at its insertion layer, appended after the tokens and masked for
every other row; the layers below run once for the whole batch. A LoRA row carries its tenant's
low-rank query and value updates into every layer as per-row inputs of the shared graph (the
adapter weights stacked per batch, as Punica and S-LoRA do), zero for the other rows. So a row's
answer does not depend on who else is in the batch.

A hot LoRA tenant also gets a fast path, CaraServe-style: its updates merged into the layers'
weights and compiled as one graph. Preparing that takes about half a second of CPU, so while it
is prepared the tenant's rows run on the shared path at once, and switch over when it is ready.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from prometheus_client import Counter, Gauge

from services.common.batching import BatchingConfig, MicroBatcher
from services.common.errors import NotFound
from services.common.model_versions import ModelVersions
from services.common.tokens import EncodedText, TextEncoder, pad_batch
from services.earlyexit.core.adapters import (
    StoredAdapter,
    StoredBackbone,
    TenantAdapter,
    adapter_name,
    adapters_root,
    backbones_root,
    load_adapter,
    zero_lora_inputs,
)
from services.earlyexit.core.ports import BackboneGraphs, MergedLayers
from services.earlyexit.core.scheduling import CostModel, DeadlineBatcher, SchedulingConfig, Shape

log = logging.getLogger(__name__)

FAST_PATHS = Gauge("rosemesh_adapter_fast_paths", "LoRA tenants whose merged fast path is ready.")
FAST_PATHS_PREPARED = Counter(
    "rosemesh_adapter_fast_paths_prepared", "LoRA fast paths prepared (merged and compiled), by outcome.", ["outcome"]
)
FAST_PATH_ROWS = Counter("rosemesh_adapter_rows", "Tenant rows served, by path.", ["path"])

#: Runs work on the backbone: on the serving worker, or (``prepare``) beside it.
RunGraphs = Callable[..., Awaitable]

#: How long a replica trusts its view of an adapter's CURRENT pointer before reading it again.
POINTER_TTL_S = 1.0

#: The batches timed at start to fit the scheduler's cost model: rows × padded shape.
PROBES = tuple(
    (rows, Shape(tokens, rank)) for rows in (2, 16) for tokens in (16, 64) for rank in (0, 32)
)


def probe_seconds(graphs: BackboneGraphs, rows: int, shape: Shape, repeats: int = 2) -> float:
    """The fastest of ``repeats`` runs of a ``rows`` × ``shape`` batch through the shared path."""
    ids = np.full((rows, shape.tokens + shape.prompt), 1000, dtype=np.int64)
    mask = np.ones_like(ids)
    best = float("inf")
    for _ in range(repeats):
        began = time.perf_counter()
        hidden = graphs.embed(ids)
        updates = zero_lora_inputs(rows, hidden.shape[2], shape.rank) if shape.rank else None
        for layer in range(1, graphs.num_layers + 1):
            hidden = graphs.layer(layer, hidden, mask, updates)
        best = min(best, time.perf_counter() - began)
    return best


def measure_costs(graphs: BackboneGraphs) -> CostModel:
    probe_seconds(graphs, 2, Shape(16, 8), repeats=1)  # warms the sessions
    return CostModel.fit([(rows, shape, probe_seconds(graphs, rows, shape)) for rows, shape in PROBES])


def _row_updates(rows: int, width: int, groups: list[tuple[list[int], TenantAdapter]], layer: int) -> tuple[np.ndarray, ...]:
    """Each row's LoRA updates at ``layer``, zero-padded to the batch's highest rank (zero rows and
    columns add exactly nothing), and zero for rows without LoRA."""
    stacked = zero_lora_inputs(rows, width, max(adapter.rank for _, adapter in groups))
    for group, adapter in groups:
        for array, update in zip(stacked, adapter.lora(layer), strict=True):
            if array.shape[1] == width:
                array[group, :, : adapter.rank] = update
            else:
                array[group, : adapter.rank] = update
    return stacked


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


def _shape(row: TaskRow) -> Shape:
    return Shape(len(row.encoded.ids), row.adapter.rank, row.adapter.prompt_length)


@dataclass(frozen=True)
class FastPathConfig:
    #: How many LoRA tenants hold a merged graph at once (each is a copy of the layers' weights).
    tenants: int = 2
    #: A tenant is hot, and its fast path prepared, after this many requests within the window.
    hot_after: int = 4
    hot_window_s: float = 10.0
    #: Hold a cold tenant's requests until its fast path is ready (load-then-serve, the baseline)
    #: instead of serving them on the shared path meanwhile.
    wait: bool = False


#: LoRA tenants whose recent requests are counted before the idle ones are forgotten.
RECENT_TENANTS_KEPT = 1024


def _key(adapter: TenantAdapter) -> tuple[str, str, str]:
    manifest = adapter.manifest
    return manifest.tenant, manifest.task, manifest.version


class FastPaths:
    """Hot LoRA tenants' merged graphs. A new one takes the place of the least recently used
    only when that one has been idle a whole window: hot tenants never evict each other in turn."""

    def __init__(
        self,
        config: FastPathConfig,
        prepare: Callable[[TenantAdapter], Awaitable[MergedLayers]],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self._prepare = prepare
        self._clock = clock
        self._ready: OrderedDict[tuple[str, str, str], MergedLayers] = OrderedDict()
        self._used: dict[tuple[str, str, str], float] = {}
        self._preparing: dict[tuple[str, str, str], asyncio.Task[None]] = {}
        self._recent: dict[tuple[str, str, str], deque[float]] = {}

    def ready(self, adapter: TenantAdapter) -> MergedLayers | None:
        return self._ready.get(_key(adapter))

    async def note_request(self, adapter: TenantAdapter) -> None:
        """Count a request; a tenant that turns hot gets its fast path prepared (and, when
        configured to wait, its request held until then)."""
        if not adapter.rank or not self.config.tenants:
            return
        key, now = _key(adapter), self._clock()
        if key in self._ready:
            self._used[key] = now
            self._ready.move_to_end(key)
            return
        task = self._preparing.get(key)
        if task is None:
            if key not in self._recent and len(self._recent) >= RECENT_TENANTS_KEPT:
                self._forget_cold(now)
            recent = self._recent.setdefault(key, deque(maxlen=self.config.hot_after))
            recent.append(now)
            hot = len(recent) == self.config.hot_after and now - recent[0] <= self.config.hot_window_s
            if not hot or not self._room(now):
                return
            del self._recent[key]
            task = self._preparing[key] = asyncio.create_task(self._make(key, adapter))
        if self.config.wait:
            await asyncio.shield(task)

    def _forget_cold(self, now: float) -> None:
        """Drop the request counts of tenants idle past the hot window: they cannot be hot."""
        window = self.config.hot_window_s
        for key in [k for k, times in self._recent.items() if now - times[-1] > window]:
            del self._recent[key]

    def _room(self, now: float) -> bool:
        if len(self._ready) + len(self._preparing) < self.config.tenants:
            return True
        coldest = next(iter(self._ready), None)
        return coldest is not None and now - self._used[coldest] > self.config.hot_window_s

    async def _make(self, key: tuple[str, str, str], adapter: TenantAdapter) -> None:
        try:
            merged = await self._prepare(adapter)
        except Exception:  # the shared path still serves it; say why the fast one is missing
            log.exception("preparing the fast path of %s.%s failed", key[0], key[1])
            FAST_PATHS_PREPARED.labels("failed").inc()
            return
        finally:
            self._preparing.pop(key, None)
        self._ready[key], self._used[key] = merged, self._clock()
        FAST_PATHS_PREPARED.labels("ready").inc()
        while len(self._ready) > self.config.tenants:
            evicted, _ = self._ready.popitem(last=False)
            del self._used[evicted]
        FAST_PATHS.set(len(self._ready))


class TenantClassifier:
    """Tenants' tasks on the shared backbone; concurrent requests are batched together."""

    def __init__(
        self,
        backbone: StoredBackbone,
        cache: AdapterCache,
        run_graphs: RunGraphs,
        batching: BatchingConfig,
        fast_paths: FastPathConfig = FastPathConfig(),
        scheduling: SchedulingConfig | None = SchedulingConfig(),
    ) -> None:
        """``scheduling``: deadline- and cost-aware batches; None: first come, first batched."""
        self.backbone = backbone
        self.cache = cache
        self.encoder = TextEncoder(backbone.tokenizer_path, backbone.manifest.max_tokens)
        self._run_graphs = run_graphs
        self.fast_paths = FastPaths(
            fast_paths, lambda adapter: run_graphs(lambda graphs: graphs.merge_lora(adapter), prepare=True)
        )
        self._batching, self._scheduling = batching, scheduling
        self.batcher: DeadlineBatcher[TaskRow, np.ndarray] | MicroBatcher[TaskRow, np.ndarray] | None = None
        self.costs: CostModel | None = None

    async def start(self) -> None:
        """Measure the batch costs on this machine (deadline scheduling), then take requests."""
        if self._scheduling is None:
            arrival_order = BatchingConfig(**{**vars(self._batching), "sort_window_batches": 1})
            self.batcher = MicroBatcher("adapters", self._run_batch, arrival_order)
        else:
            self.costs = await self._run_graphs(measure_costs)
            self.batcher = DeadlineBatcher("adapters", self._run_batch, _shape, self.costs, self._scheduling)
        self.batcher.start()

    async def stop(self) -> None:
        if self.batcher is not None:
            await self.batcher.stop()

    async def _run_batch(self, rows: list[TaskRow]) -> list[np.ndarray]:
        fast: dict[int, tuple[MergedLayers, list[int]]] = {}
        shared = []
        for index, row in enumerate(rows):
            merged = self.fast_paths.ready(row.adapter)
            if merged is None:
                shared.append(index)
            else:
                fast.setdefault(id(merged), (merged, []))[1].append(index)
        FAST_PATH_ROWS.labels("shared").inc(len(shared))
        FAST_PATH_ROWS.labels("fast").inc(len(rows) - len(shared))

        def work(graphs: BackboneGraphs) -> list[np.ndarray]:
            logits: list[np.ndarray] = [np.empty(0)] * len(rows)
            for merged, group in fast.values():
                ids, mask = pad_batch([rows[i].encoded for i in group])
                hidden = merged.layers(graphs.embed(ids), mask)
                logits_of = rows[group[0]].adapter.logits(hidden, mask)
                for i, values in zip(group, logits_of, strict=True):
                    logits[i] = values
            if shared:
                ids, mask = pad_batch([rows[i].encoded for i in shared])
                adapters = [rows[i].adapter for i in shared]
                for i, values in zip(shared, adapter_logits(graphs, ids, mask, adapters), strict=True):
                    logits[i] = values
            return logits

        return await self._run_graphs(work)

    def adapter(self, tenant: str, task: str) -> TenantAdapter:
        adapter = self.cache.get(tenant, task)
        if adapter.manifest.backbone_version != self.backbone.manifest.version:
            raise NotFound(
                f"{tenant}.{task} was trained on backbone {adapter.manifest.backbone_version}, "
                f"this service runs {self.backbone.manifest.version}; adapt it again"
            )
        return adapter

    async def classify(
        self, texts: Sequence[str], tenant: str, task: str, deadline_s: float | None = None
    ) -> tuple[TenantAdapter, list[EncodedText], list[np.ndarray]]:
        """``deadline_s``: the seconds the caller gives the request (its gRPC deadline)."""
        assert self.batcher is not None, "start() first"
        adapter = await asyncio.to_thread(self.adapter, tenant, task)
        await self.fast_paths.note_request(adapter)
        encoded = self.encoder.encode(list(texts))
        rows = [TaskRow(e, adapter) for e in encoded]
        if isinstance(self.batcher, DeadlineBatcher):
            logits = await self.batcher.submit(rows, deadline_s)
        else:
            logits = await self.batcher.submit(rows)
        return adapter, encoded, logits


def current_backbone(models_dir: Path, base_model: str) -> StoredBackbone | None:
    versions = ModelVersions(backbones_root(models_dir))
    version = versions.current(base_model)
    return StoredBackbone(versions.path(base_model, version)) if version else None
