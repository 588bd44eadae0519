"""`rosemesh train adapter --job ID`: the worker that runs one Adapt operation.

It trains in its own process (the service only starts it), reports stage, progress and dev
accuracy into the job record, and publishes the adapter as an immutable version. Stopped by
SIGTERM it hands the job back to the queue; killed outright, its heartbeats stop and another
worker starts it again.
"""

from __future__ import annotations

import hashlib
import json
import random
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from services.common import memory
from services.common.base_model import BASE_MODEL_NAME
from services.common.model_versions import ModelVersions, VersionExists
from services.common.tokens import TextEncoder
from services.earlyexit.core.adapters import (
    MANIFEST,
    WEIGHTS,
    AdapterManifest,
    AdaptMethod,
    StoredAdapter,
    StoredBackbone,
    adapter_name,
    adapters_root,
    write_json,
)
from services.earlyexit.core.jobs import (
    MAX_ATTEMPTS,
    AdaptSpec,
    JobRecord,
    JobState,
    JobStore,
    worker_identity,
)
from services.offline.datasets import CLASSIFICATION_DATASETS

#: Share of inline examples held out, stratified, as the dev split.
DEV_SHARE = 0.1
_REPORT_EVERY_S = 1.0


@dataclass(frozen=True)
class AdaptData:
    labels: list[str]
    train: list[tuple[str, int]]
    dev: list[tuple[str, int]]


def stratified_split(examples: list[tuple[str, str]], seed: str) -> AdaptData:
    """Hold out a tenth of each label (at least one where a label has two or more) as dev."""
    labels = sorted({label for _, label in examples})
    index = {label: i for i, label in enumerate(labels)}
    rng = random.Random(seed)
    train, dev = [], []
    for label in labels:
        rows = [(text, index[label]) for text, l in examples if l == label]
        rng.shuffle(rows)
        held = max(1, round(len(rows) * DEV_SHARE)) if len(rows) >= 2 else 0
        dev += rows[:held]
        train += rows[held:]
    return AdaptData(labels, train, dev)


def adapt_data(spec: AdaptSpec, store: JobStore, job: str) -> AdaptData:
    if spec.dataset:
        if spec.dataset not in CLASSIFICATION_DATASETS:
            raise ValueError(f"unknown data set {spec.dataset!r}; known: {', '.join(sorted(CLASSIFICATION_DATASETS))}")
        splits = CLASSIFICATION_DATASETS[spec.dataset]()
        index = {label: i for i, label in enumerate(splits.labels)}
        return AdaptData(
            list(splits.labels),
            [(r.text, index[r.label]) for r in splits.train],
            [(r.text, index[r.label]) for r in splits.dev],
        )
    return stratified_split(store.examples(job), seed=job)


def adapter_version(spec: AdaptSpec, data: AdaptData, backbone: str) -> str:
    trained = spec.model_dump(mode="json", exclude={"request_id", "tenant", "task"})
    digest = hashlib.sha256(json.dumps([trained, backbone, data.labels], sort_keys=True).encode())
    for text, label in data.train:
        digest.update(f"{label}\0{text}\n".encode())
    return digest.hexdigest()[:12]


class JobReporter:
    """Writes the job's stage and progress at most once a second, and heartbeats meanwhile."""

    def __init__(self, store: JobStore, record: JobRecord) -> None:
        self.store = store
        self.record = record
        self._lock = threading.Lock()
        self._last = 0.0
        self._stop = threading.Event()
        self._beat = threading.Thread(target=self._heartbeat, daemon=True)
        self._beat.start()

    def _heartbeat(self) -> None:
        while not self._stop.wait(self.store.heartbeat_timeout_s / 4):
            self.update(force=True)

    def update(self, *, force: bool = False, **fields: object) -> None:
        with self._lock:
            for key, value in fields.items():
                setattr(self.record, key, value)
            now = time.time()
            if force or fields.keys() - {"progress"} or now - self._last >= _REPORT_EVERY_S:
                self.record.heartbeat_at = now
                self.store.save(self.record)
                self._last = now

    def close(self) -> None:
        self._stop.set()
        self._beat.join()


@dataclass
class MethodTrainer:
    """One method's model and config, how it trains, and what its bundle and manifest store."""

    model: Any
    config: Any
    train: Callable[..., Any]  # (encoded, labels, progress, should_stop=, on_epoch=) → TrainingReport
    weights: Callable[[], dict[str, np.ndarray]]
    shape: dict[str, Any]


def method_trainer(spec: AdaptSpec, num_labels: int) -> MethodTrainer:
    from services.earlyexit.backends.torch_model import load_base_encoder

    if spec.method is AdaptMethod.LPT:
        from services.earlyexit.offline.lpt import (
            LatePromptClassifier,
            LptConfig,
            adapter_weights,
            train_late_prompt,
        )

        lpt = LptConfig(
            insertion_layer=spec.insertion_layer,
            prompt_length=spec.prompt_length,
            generator_size=spec.generator_size,
            epochs=spec.epochs,
        )
        prompted = LatePromptClassifier(load_base_encoder(), num_labels, lpt)
        return MethodTrainer(
            prompted,
            lpt,
            lambda encoded, labels, progress, **hooks: train_late_prompt(prompted, encoded, labels, lpt, progress, **hooks),
            lambda: adapter_weights(prompted),
            {"insertion_layer": lpt.insertion_layer, "prompt_length": lpt.prompt_length, "generator_size": lpt.generator_size},
        )
    from services.earlyexit.offline.lora import LoraClassifier, LoraTrainConfig, lora_weights, train_lora

    lora = LoraTrainConfig(rank=spec.rank, target_modules=tuple(spec.target_modules), epochs=spec.epochs)
    low_rank = LoraClassifier(load_base_encoder(), num_labels, lora)
    return MethodTrainer(
        low_rank,
        lora,
        lambda encoded, labels, progress, **hooks: train_lora(low_rank, encoded, labels, lora, progress, **hooks),
        lambda: lora_weights(low_rank),
        {"rank": lora.rank, "target_modules": list(lora.target_modules)},
    )


def run_job(models_dir: Path, job: str, heartbeat_timeout_s: float | None = None) -> JobRecord:
    """Run ``job`` to its end; the caller must hold its claim."""
    import torch

    from services.earlyexit.offline.backbone import publish_backbone
    from services.earlyexit.offline.lpt import predict, set_threads

    store = JobStore(models_dir, **({"heartbeat_timeout_s": heartbeat_timeout_s} if heartbeat_timeout_s else {}))
    record = store.get(job)
    if record.state.finished:
        store.release(job)
        return record
    if store.cancel_requested(job):
        record.state, record.stage = JobState.CANCELLED, "cancelled before it started"
        store.save(record)
        store.release(job)
        return record
    if record.attempts >= MAX_ATTEMPTS:
        record.state, record.error = JobState.FAILED, f"its worker was lost {record.attempts} times"
        store.save(record)
        store.release(job)
        return record
    record.state, record.stage, record.progress = JobState.RUNNING, "preparing", 0.0
    record.attempts += 1
    record.worker = worker_identity()
    reporter = JobReporter(store, record)
    interrupted = threading.Event()
    previous = signal.signal(signal.SIGTERM, lambda *_: interrupted.set())
    spec = record.spec
    try:
        set_threads()
        data = adapt_data(spec, store, job)
        reporter.update(stage="exporting the backbone")
        backbone: StoredBackbone = publish_backbone(models_dir)
        encoder = TextEncoder(backbone.tokenizer_path, backbone.manifest.max_tokens)
        train_encoded = encoder.encode([text for text, _ in data.train])
        dev_encoded = encoder.encode([text for text, _ in data.dev])
        dev_gold = np.array([label for _, label in data.dev])
        version = adapter_version(spec, data, backbone.manifest.version)
        name = adapter_name(spec.tenant, spec.task)
        versions = ModelVersions(adapters_root(models_dir))
        if versions.is_published(name, version):  # the same examples and options, trained before
            versions.point(name, version)
            manifest = StoredAdapter(versions.path(name, version)).manifest
            reporter.update(
                state=JobState.SUCCEEDED, stage="published (trained before)", progress=1.0,
                dev_accuracy=manifest.dev_accuracy, adapter_version=version, force=True,
            )
            return record
        trainer = method_trainer(spec, len(data.labels))
        model = trainer.model
        baseline = memory.resident_bytes()
        memory.reset_peak()

        def dev_accuracy() -> float | None:
            if not dev_encoded:
                return None
            return float((predict(model, dev_encoded).argmax(axis=1) == dev_gold).mean())

        caching_share = 0.1 if spec.method is AdaptMethod.LPT else 0.0

        def progress(what: str, done: int, total: int) -> None:
            share = done / max(1, total)
            fraction = caching_share * share if what.startswith("caching") else caching_share + (1 - caching_share) * share
            reporter.update(stage=what, progress=round(fraction, 4))

        cancelled = lambda: interrupted.is_set() or store.cancel_requested(job)  # noqa: E731
        report = trainer.train(
            train_encoded,
            [label for _, label in data.train],
            progress,
            should_stop=cancelled,
            on_epoch=lambda epoch: reporter.update(stage=f"epoch {epoch} done", dev_accuracy=dev_accuracy()),
        )
        if interrupted.is_set():
            reporter.update(state=JobState.QUEUED, stage="interrupted; waiting for a worker", force=True)
            return record
        if store.cancel_requested(job):
            reporter.update(state=JobState.CANCELLED, stage="cancelled", force=True)
            return record
        peak = memory.peak_bytes()
        accuracy = dev_accuracy()
        weights = trainer.weights()
        reporter.update(stage="publishing")
        try:
            with versions.publish(name, version) as directory:
                np.savez(directory / WEIGHTS, **weights)
                write_json(
                    directory / MANIFEST,
                    AdapterManifest(
                        tenant=spec.tenant,
                        task=spec.task,
                        version=version,
                        method=spec.method,
                        base_model=BASE_MODEL_NAME,
                        backbone_version=backbone.manifest.version,
                        labels=data.labels,
                        **trainer.shape,
                        parameters=int(sum(w.size for w in weights.values())),
                        dev_accuracy=accuracy if accuracy is not None else 0.0,
                        training={
                            "epochs": trainer.config.epochs,
                            "lr": trainer.config.lr,
                            "batch_size": trainer.config.batch_size,
                            "train_examples": len(data.train),
                            "dev_examples": len(data.dev),
                            "seconds": round(report.seconds, 1),
                            "steps": report.steps,
                            "final_loss": round(report.final_loss, 4),
                            "torch_threads": torch.get_num_threads(),
                            "peak_bytes_over_start": (peak - baseline) if peak and baseline else None,
                        },
                    ),
                )
        except VersionExists:
            pass  # the same adapter, published by a worker that raced this one
        versions.point(name, version)
        reporter.update(
            state=JobState.SUCCEEDED, stage="published", progress=1.0, dev_accuracy=accuracy,
            adapter_version=version, force=True,
        )
    except Exception as exc:  # noqa: BLE001 - the job records why it failed
        reporter.update(state=JobState.FAILED, stage="failed", error=f"{type(exc).__name__}: {exc}", force=True)
    finally:
        signal.signal(signal.SIGTERM, previous)
        reporter.close()
        store.release(job)
    return record
