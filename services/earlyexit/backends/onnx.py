"""ONNX Runtime in process: the embedded default backend, one session per exported graph."""

from __future__ import annotations

import asyncio
import functools
import os
import shutil
import tempfile
import weakref
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

import numpy as np
import onnx
import onnxruntime as ort

from services.common.errors import NotFound
from services.earlyexit.core.adapters import LORA_INPUTS, StoredBackbone, TenantAdapter, zero_lora_inputs
from services.earlyexit.core.bundle import StoredModel
from services.earlyexit.core.policy import CascadeResult, ExitPolicy, run_cascade
from services.earlyexit.core.ports import BackboneGraphs, EarlyExitBackend

T = TypeVar("T")


def _session(graph: os.PathLike[str] | bytes, threads: int, arena: bool = True) -> ort.InferenceSession:
    source = graph if isinstance(graph, bytes) else str(graph)
    return ort.InferenceSession(source, _options(threads, arena), providers=["CPUExecutionProvider"])


def _options(threads: int, arena: bool) -> ort.SessionOptions:
    options = ort.SessionOptions()
    # A session's arena keeps its largest batch's activations; the backbone's many small graphs
    # would keep one each, and a tenant's memory is what the mesh promises to keep small.
    options.enable_cpu_mem_arena = arena
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads
    # Idle threads must sleep, not spin: the event loop and the gRPC threads share these cores.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options


class OnnxModel:
    """One model's graphs: a segment per layer (multi-exit), or one graph (HashEE, plain)."""

    def __init__(self, stored: StoredModel, threads: int = 0) -> None:
        self.manifest = stored.manifest
        threads = threads or (os.cpu_count() or 1)
        self.sessions = [_session(path, threads) for path in stored.graphs]

    def run_segment(
        self, index: int, inputs: np.ndarray, attention_mask: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        first = "input_ids" if index == 0 else "hidden_in"
        hidden, logits = self.sessions[index].run(None, {first: inputs, "attention_mask": attention_mask})
        return hidden, logits

    def classify(
        self, input_ids: np.ndarray, attention_mask: np.ndarray, policy: ExitPolicy
    ) -> CascadeResult:
        if self.manifest.kind.single_graph:
            (logits,) = self.sessions[0].run(None, {"input_ids": input_ids, "attention_mask": attention_mask})
            return CascadeResult(logits, np.full(len(logits), self.manifest.num_layers, dtype=np.int64))
        return run_cascade(self.run_segment, input_ids, attention_mask, policy, self.manifest.num_layers)


class FusedLayers:
    """Every layer of the backbone as one graph, built once, and the names in it of each layer's
    query and value weights: a tenant's fast path is this graph with those weights replaced."""

    def __init__(self, stored: StoredBackbone) -> None:
        model = onnx.load(str(stored.layer_graph(1)))
        graph = model.graph
        del graph.node[:], graph.initializer[:], graph.value_info[:]
        #: (layer, projection) → (its weight's name in the fused graph, the frozen weight)
        self.weights: dict[tuple[int, str], tuple[str, np.ndarray]] = {}
        previous = "hidden_in"
        for layer in range(1, stored.manifest.num_layers + 1):
            part = onnx.load(str(stored.layer_graph(layer))).graph
            renamed = functools.partial(_renamed, {"attention_mask": "attention_mask", "hidden_in": previous}, f"layer{layer}/")
            for projection, weight in _projection_weights(part).items():
                self.weights[(layer, projection)] = (renamed(weight.name), onnx.numpy_helper.to_array(weight))
            for weight in part.initializer:
                weight.name = renamed(weight.name)
            for node in part.node:
                node.name = renamed(node.name)
                node.input[:] = [renamed(name) for name in node.input]
                node.output[:] = [renamed(name) for name in node.output]
            graph.initializer.extend(part.initializer)
            graph.node.extend(part.node)
            previous = renamed(part.output[0].name)
        graph.output[0].name = previous
        # Sessions load it from a file: ONNX Runtime holds the GIL while it parses a graph passed
        # as bytes (tens of milliseconds at a time, which stall the serving thread), not a path.
        scratch = tempfile.mkdtemp(prefix="rosemesh-fused-layers-")
        weakref.finalize(self, shutil.rmtree, scratch, ignore_errors=True)
        self.path = Path(scratch) / "layers.onnx"
        onnx.save(model, str(self.path))


def _renamed(shared: dict[str, str], prefix: str, name: str) -> str:
    """A layer's own names prefixed (an empty name is an absent optional input); shared ones mapped."""
    return shared.get(name) or (prefix + name if name else name)


def _projection_weights(layer: onnx.GraphProto) -> dict[str, onnx.TensorProto]:
    """The weight of the MatMul feeding each LoRA projection's bias (the exported graph names
    biases, not the transposed weights)."""
    weights = {weight.name: weight for weight in layer.initializer}
    producer = {out: node for node in layer.node for out in node.output}
    found = {}
    for name in LORA_INPUTS:
        if name.endswith("_a"):
            projection = name.removesuffix("_a")
            bias = f"layer.{projection}.bias"
            add = next(node for node in layer.node if node.op_type == "Add" and bias in node.input)
            (product,) = [name for name in add.input if name != bias]
            found[projection] = weights[producer[product].input[1]]
    return found


class MergedLoraLayers:
    """A hot LoRA tenant's fast path: the fused layers compiled with its updates merged into the
    query and value weights (``W + A @ B``), so no per-row LoRA input is left to feed. The merge
    is numpy and the compile ONNX Runtime's: no per-tenant graph is built in Python."""

    def __init__(self, fused: FusedLayers, adapter: TenantAdapter, threads: int) -> None:
        options = _options(threads, arena=False)
        # ONNX Runtime reads these buffers for the session's life: they are kept here.
        self._merged = []
        for (layer, projection), (name, weight) in fused.weights.items():
            updates = dict(zip(LORA_INPUTS, adapter.lora(layer), strict=True))
            merged = ort.OrtValue.ortvalue_from_numpy(
                np.ascontiguousarray(weight + updates[f"{projection}_a"] @ updates[f"{projection}_b"], dtype=np.float32)
            )
            options.add_initializer(name, merged)
            self._merged.append(merged)
        self._session = ort.InferenceSession(str(fused.path), options, providers=["CPUExecutionProvider"])

    def layers(self, hidden: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        (out,) = self._session.run(None, {"hidden_in": hidden, "attention_mask": attention_mask})
        return out


class OnnxBackbone(BackboneGraphs):
    """The shared backbone's embeddings and layer graphs."""

    def __init__(self, stored: StoredBackbone, threads: int = 0) -> None:
        self.stored = stored
        self.threads = threads or (os.cpu_count() or 1)
        self.num_layers = stored.manifest.num_layers
        self._embeddings = _session(stored.embeddings_graph, self.threads, arena=False)
        # Only the LoRA form of each layer is loaded: a row without LoRA feeds it rank-0 updates,
        # which add exactly nothing, so the layers' weights are held once, not twice.
        self._layers = [
            _session(stored.lora_layer_graph(i), self.threads, arena=False) for i in range(1, self.num_layers + 1)
        ]
        self._fused: FusedLayers | None = None  # built with the first fast path

    def embed(self, input_ids: np.ndarray) -> np.ndarray:
        (hidden,) = self._embeddings.run(None, {"input_ids": input_ids})
        return hidden

    def layer(
        self,
        layer: int,
        hidden: np.ndarray,
        attention_mask: np.ndarray,
        row_lora: tuple[np.ndarray, ...] | None = None,
    ) -> np.ndarray:
        if row_lora is None:
            row_lora = zero_lora_inputs(len(hidden), hidden.shape[2], 0)
        feeds = {"hidden_in": hidden, "attention_mask": attention_mask} | dict(zip(LORA_INPUTS, row_lora, strict=True))
        (out,) = self._layers[layer - 1].run(None, feeds)
        return out

    def merge_lora(self, adapter: TenantAdapter) -> MergedLoraLayers:
        if self._fused is None:
            self._fused = FusedLayers(self.stored)
        return MergedLoraLayers(self._fused, adapter, self.threads)


class OnnxRuntimeBackend(EarlyExitBackend):
    runtime = "onnxruntime"

    def __init__(self, models: list[StoredModel], threads: int = 0) -> None:
        self.models = {stored.name: OnnxModel(stored, threads) for stored in models}
        self.threads = threads
        self.backbone: OnnxBackbone | None = None
        # One batch at a time: a session already uses every core.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="onnxruntime")
        # Fast paths are prepared beside the serving worker, never in its way.
        self._preparing = ThreadPoolExecutor(max_workers=1, thread_name_prefix="onnxruntime-prepare")

    async def classify(
        self, model: str, input_ids: np.ndarray, attention_mask: np.ndarray, policy: ExitPolicy
    ) -> CascadeResult:
        if model not in self.models:
            raise NotFound(f"model {model!r} is not loaded")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            self._executor, self.models[model].classify, input_ids, attention_mask, policy
        )

    @property
    def has_backbone(self) -> bool:
        return self.backbone is not None

    def attach_backbone(self, stored: StoredBackbone) -> None:
        self.backbone = OnnxBackbone(stored, self.threads)

    async def run_backbone(self, work: Callable[[BackboneGraphs], T], prepare: bool = False) -> T:
        if self.backbone is None:
            raise NotFound("no adapter backbone is loaded; train an adapter first (Adapt)")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._preparing if prepare else self._executor, work, self.backbone)

    async def close(self) -> None:
        self._executor.shutdown(wait=True)
        self._preparing.shutdown(wait=True)
