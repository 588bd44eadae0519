"""Triton Inference Server over gRPC: the BLS orchestrator runs the cascade inside Triton.

``render_repository`` writes the model repository from ``deploy/triton/earlyexit``: for a
multi-exit model, one Triton model per segment (``<name>_segment_<n>``) plus the BLS
orchestrator under the model's own name; for HashEE, its one graph.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from kernels import exit_cascade
from services.adapters.tritonserver import TEMPLATES_DIR, Profile, render_model_repository
from services.adapters.tritonserver_client import TritonModels
from services.common.errors import NotFound
from services.earlyexit.core.bundle import SINGLE_GRAPHS, StoredModel, segment_file
from services.earlyexit.core.policy import CascadeResult, ExitPolicy, policy_to_wire
from services.earlyexit.core.ports import EarlyExitBackend

TEMPLATES = TEMPLATES_DIR / "earlyexit"
#: The cascade's one dependency beyond numpy, copied next to its model.py (one source, no copy by hand).
CASCADE_MODULE = "exit_cascade.py"


def render_repository(repository: Path, models: Sequence[StoredModel], profile: Profile = "local") -> Path:
    """Write every model's Triton models into ``repository``; returns it."""
    for stored in models:
        manifest = stored.manifest
        labels = {"num_labels": str(len(manifest.labels)), "hidden": str(manifest.hidden)}
        if manifest.kind.single_graph:
            graph = SINGLE_GRAPHS[manifest.kind]
            render_model_repository(
                repository, TEMPLATES / "single_graph", manifest.name, {graph: stored.directory / graph},
                profile, variables={**labels, "onnx_file": graph},
            )  # fmt: skip
            continue
        for index, graph in enumerate(stored.graphs):
            first = index == 0
            render_model_repository(
                repository, TEMPLATES / "segment", f"{manifest.name}_segment_{index + 1}",
                {segment_file(index): graph}, profile,
                variables={
                    **labels,
                    "onnx_file": segment_file(index),
                    "input_name": "input_ids" if first else "hidden_in",
                    "input_type": "TYPE_INT64" if first else "TYPE_FP32",
                    "input_dims": "[ -1 ]" if first else f"[ -1, {manifest.hidden} ]",
                },
            )  # fmt: skip
        render_model_repository(
            repository, TEMPLATES / "cascade", manifest.name, {CASCADE_MODULE: Path(exit_cascade.__file__)}, profile,
            variables={**labels, "depth": str(manifest.num_layers)},
        )  # fmt: skip
    return repository


class TritonBackend(EarlyExitBackend):
    runtime = "triton"

    def __init__(self, url: str, models: Sequence[StoredModel], *, timeout_s: float = 30.0) -> None:
        self.kinds = {stored.name: stored.manifest.kind for stored in models}
        self.depths = {stored.name: stored.manifest.num_layers for stored in models}
        self.triton = TritonModels(url, timeout_s=timeout_s)

    async def start(self) -> None:
        await self.triton.start(list(self.kinds))

    async def classify(
        self, model: str, input_ids: np.ndarray, attention_mask: np.ndarray, policy: ExitPolicy
    ) -> CascadeResult:
        if model not in self.kinds:
            raise NotFound(f"model {model!r} is not loaded")
        feed = {"input_ids": input_ids.astype(np.int64), "attention_mask": attention_mask.astype(np.int64)}
        if self.kinds[model].single_graph:
            logits = (await self.triton.infer(model, feed, ["logits"]))["logits"]
            return CascadeResult(logits, np.full(len(logits), self.depths[model], dtype=np.int64))
        mode, static_layer, threshold, patience = policy_to_wire(policy)
        feed |= {
            "exit_mode": np.array([mode], dtype=np.int32),
            "static_layer": np.array([static_layer], dtype=np.int32),
            "entropy_threshold": np.array([threshold], dtype=np.float64),
            "patience": np.array([patience], dtype=np.int32),
        }
        outputs = await self.triton.infer(model, feed, ["logits", "exit_layer"])
        return CascadeResult(outputs["logits"], outputs["exit_layer"])

    async def close(self) -> None:
        await self.triton.close()
