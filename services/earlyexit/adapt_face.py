"""The early-exit service's Adapt face: validates Adapt requests, queues their jobs, and maps
jobs and adapters to protobuf. Training itself runs in a worker process."""

from __future__ import annotations

import asyncio
import functools
import json
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from rosemesh.earlyexit.v1 import earlyexit_pb2 as pb

from services.common.base_model import source_model_dir
from services.common.errors import NotFound, Validator
from services.earlyexit.core.adapters import LORA_MODULES, TASK_PATTERN, AdaptMethod, list_adapters
from services.earlyexit.core.jobs import AdaptSpec, JobRecord, JobState, JobStore
from services.runtime.security import acting_tenant, caller_tenant

_METHODS = {pb.ADAPT_METHOD_LPT: AdaptMethod.LPT, pb.ADAPT_METHOD_LORA: AdaptMethod.LORA}
_METHOD_CODES = {method: code for code, method in _METHODS.items()}
_STATES = {
    JobState.QUEUED: pb.OPERATION_STATE_QUEUED,
    JobState.RUNNING: pb.OPERATION_STATE_RUNNING,
    JobState.SUCCEEDED: pb.OPERATION_STATE_SUCCEEDED,
    JobState.FAILED: pb.OPERATION_STATE_FAILED,
    JobState.CANCELLED: pb.OPERATION_STATE_CANCELLED,
}
MAX_TEXT_CHARS = 20_000
MAX_LABEL_CHARS = 128
MAX_REQUEST_ID_CHARS = 128


def operation(record: JobRecord) -> pb.Operation:
    message = pb.Operation(
        id=record.id,
        tenant=record.spec.tenant,
        task=record.spec.task,
        method=_METHOD_CODES[record.spec.method],
        state=_STATES[record.state],
        stage=record.stage,
        progress=record.progress,
        adapter_version=record.adapter_version,
        error=record.error,
        attempts=record.attempts,
        created_at=record.created_at,
        updated_at=record.updated_at,
    )
    if record.dev_accuracy is not None:
        message.dev_accuracy = record.dev_accuracy
    return message


def _backbone_depth() -> int:
    return int(json.loads((source_model_dir() / "config.json").read_text())["num_hidden_layers"])


class AdaptFace:
    def __init__(self, jobs: JobStore, models_dir: Path, max_examples: int, queued: Callable[[], None]) -> None:
        self.jobs = jobs
        self.models_dir = models_dir
        self.max_examples = max_examples
        self._queued = queued

    @functools.cached_property
    def _depth(self) -> int:
        """Read at the first Adapt, not at construction (which must touch no file)."""
        return _backbone_depth()

    def spec(self, request: pb.AdaptRequest) -> tuple[AdaptSpec, list[tuple[str, str]]]:
        check = Validator()
        tenant = acting_tenant(check, request.tenant)
        check.check(bool(TASK_PATTERN.match(request.task)), "task", f"must be 1 to 64 of a-z, 0-9, '-', '_'; got {request.task[:80]!r}")
        check.check(len(request.request_id) <= MAX_REQUEST_ID_CHARS, "request_id", f"at most {MAX_REQUEST_ID_CHARS} characters")
        examples = [(e.text, e.label) for e in request.examples]
        if request.dataset and examples:
            check.check(False, "examples", "give examples or a data set, not both")
        elif request.dataset:
            # Serving code does not load data sets: an unknown name fails the job, saying so.
            check.check(bool(TASK_PATTERN.match(request.dataset)), "dataset", f"not a data set name: {request.dataset[:80]!r}")
        elif check.check(bool(examples), "examples", "give labelled examples or a data set name"):
            self._check_examples(check, examples)
        method = _METHODS.get(request.method)
        check.check(method is not None, "method", "must be ADAPT_METHOD_LPT or ADAPT_METHOD_LORA")
        defaults = AdaptSpec(tenant="-", task="-", method=AdaptMethod.LPT)
        lpt, lora = request.lpt, request.lora
        if lpt.insertion_layer:
            check.check(2 <= lpt.insertion_layer <= self._depth, "lpt.insertion_layer", f"must be 2 to {self._depth}")
        if lpt.prompt_length:
            check.check(lpt.prompt_length <= 32, "lpt.prompt_length", "must be 1 to 32")
        if lpt.generator_size:
            check.check(lpt.generator_size <= 512, "lpt.generator_size", "must be 1 to 512")
        if lora.rank:
            check.check(lora.rank <= 64, "lora.rank", "must be 1 to 64")
        unknown = sorted(set(lora.target_modules) - set(LORA_MODULES))
        check.check(
            not unknown, "lora.target_modules", f"{unknown} are not served; choose from {', '.join(LORA_MODULES)}"
        )
        if request.HasField("epochs"):
            check.check(0 < request.epochs <= 20, "epochs", f"must be above 0 and at most 20, got {request.epochs}")
        check.raise_if_any()
        spec = AdaptSpec(
            tenant=tenant,
            task=request.task,
            method=method,
            dataset=request.dataset or None,
            insertion_layer=lpt.insertion_layer or defaults.insertion_layer,
            prompt_length=lpt.prompt_length or defaults.prompt_length,
            generator_size=lpt.generator_size or defaults.generator_size,
            rank=lora.rank or defaults.rank,
            target_modules=list(lora.target_modules) or defaults.target_modules,
            epochs=request.epochs if request.HasField("epochs") else defaults.epochs,
            request_id=request.request_id,
        )
        return spec, examples

    def _check_examples(self, check: Validator, examples: list[tuple[str, str]]) -> None:
        check.check(
            len(examples) <= self.max_examples, "examples", f"{len(examples)} examples; at most {self.max_examples} per call"
        )
        for index, (text, label) in enumerate(examples):
            if not text.strip():
                check.check(False, f"examples[{index}].text", "is empty")
            elif len(text) > MAX_TEXT_CHARS:
                check.check(False, f"examples[{index}].text", f"{len(text)} characters; at most {MAX_TEXT_CHARS}")
            if not label.strip() or len(label) > MAX_LABEL_CHARS:
                check.check(False, f"examples[{index}].label", f"must be 1 to {MAX_LABEL_CHARS} characters")
            if len(check.violations) >= 5:
                return
        counts = Counter(label for _, label in examples)
        if check.check(len(counts) >= 2, "examples", f"need at least two labels; all {len(examples)} are {next(iter(counts))!r}"):
            rare = sorted(label for label, count in counts.items() if count < 2)
            check.check(not rare, "examples", f"every label needs at least two examples (one held out as dev); too few: {rare[:5]}")

    async def adapt(self, request: pb.AdaptRequest) -> pb.AdaptResponse:
        spec, examples = self.spec(request)
        record, created = await asyncio.to_thread(self.jobs.create, spec, examples)
        if created:
            self._queued()
        return pb.AdaptResponse(operation=operation(record))

    def _own(self, job: str) -> JobRecord:
        try:
            record = self.jobs.get(job)
        except KeyError:
            raise NotFound(f"no Adapt operation {job[:80]!r}") from None
        tenant = caller_tenant()
        if tenant is not None and record.spec.tenant != tenant:
            raise NotFound(f"no Adapt operation {job[:80]!r}")  # another tenant's: not even its existence
        return record

    async def get(self, job: str) -> pb.Operation:
        return operation(await asyncio.to_thread(self._own, job))

    async def cancel(self, job: str) -> pb.Operation:
        await asyncio.to_thread(self._own, job)
        return operation(await asyncio.to_thread(self.jobs.request_cancel, job))

    async def list(self, tenant: str) -> pb.ListAdaptersResponse:
        check = Validator()
        tenant = acting_tenant(check, tenant)
        check.raise_if_any()
        stored = await asyncio.to_thread(list_adapters, self.models_dir, tenant)
        return pb.ListAdaptersResponse(
            adapters=[
                pb.AdapterInfo(
                    tenant=m.tenant,
                    task=m.task,
                    version=m.version,
                    method=_METHOD_CODES[m.method],
                    labels=m.labels,
                    dev_accuracy=m.dev_accuracy,
                    parameters=m.parameters,
                    insertion_layer=m.insertion_layer,
                    prompt_length=m.prompt_length,
                    rank=m.rank,
                )
                for m in (a.manifest for a in stored)
            ]
        )
