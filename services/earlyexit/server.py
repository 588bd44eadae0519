"""The early-exit service's face: validates requests, maps protobuf to the core and back."""

from __future__ import annotations

import asyncio
import functools
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

import grpc
from prometheus_client import Counter, Histogram
from pydantic import Field, field_validator
from pydantic_settings import SettingsConfigDict
from rosemesh.earlyexit.v1 import earlyexit_pb2, earlyexit_pb2_grpc

from services.common.base_model import BASE_MODEL_NAME
from services.common.batching import BatchingConfig
from services.common.bundles import Bundle, BundleRequest, model_bundle, wait_for_bundle
from services.common.errors import InvalidInput, NotFound, Validator
from services.common.model_versions import Generation, ModelVersions
from services.earlyexit.adapt_face import AdaptFace
from services.earlyexit.convert import policy_from_proto, policy_to_proto
from services.earlyexit.core.adapters import StoredBackbone, TenantAdapter
from services.earlyexit.core.bundle import StoredModel, list_models, models_root
from services.earlyexit.core.classifier import (
    ClassifyLimits,
    EarlyExitClassifier,
    LoadedModel,
    TextResult,
    logits_result,
)
from services.earlyexit.core.explain import EarlyExitExplainer, Explained, explain_task
from services.earlyexit.core.jobs import JobStore
from services.earlyexit.core.policy import MODE_CODES, ModelKind
from services.earlyexit.core.ports import BackboneGraphs, EarlyExitBackend, GradientAttributor
from services.earlyexit.core.scheduling import SchedulingConfig
from services.earlyexit.core.tenants import AdapterCache, FastPathConfig, TenantClassifier, current_backbone
from services.earlyexit.core.workers import AdaptWorkers
from services.runtime.config import ServiceSettings
from services.runtime.explain_convert import attribution_to_proto, options_from_proto
from services.runtime.metrics import report_served_versions
from services.runtime.security import acting_tenant
from services.runtime.server import Service, StartProgress

T = TypeVar("T")
SERVICE_NAME = earlyexit_pb2.DESCRIPTOR.services_by_name["EarlyExitService"].full_name
_KINDS = {
    ModelKind.MULTI_EXIT: earlyexit_pb2.MODEL_KIND_MULTI_EXIT,
    ModelKind.HASHEE: earlyexit_pb2.MODEL_KIND_HASHEE,
    ModelKind.PLAIN: earlyexit_pb2.MODEL_KIND_PLAIN,
}
_HASHES = {"frequency": earlyexit_pb2.TOKEN_HASH_FREQUENCY, "random": earlyexit_pb2.TOKEN_HASH_RANDOM}

EXIT_LAYERS = Histogram(
    "rosemesh_earlyexit_exit_layer",
    "Layer at which each classified text exited, by model and exit mode.",
    ["model", "mode"],
    buckets=tuple(range(1, 13)),
)
TEXTS = Counter("rosemesh_earlyexit_texts", "Texts classified, by model and exit mode.", ["model", "mode"])


class EarlyExitSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="ROSEMESH_EARLYEXIT_")

    port: int = Field(50053, ge=0, le=65535)
    metrics_port: int = Field(9466, ge=0, le=65535)
    backend: Literal["onnx", "triton"] = Field("onnx", description="ONNX Runtime in process, or Triton")
    triton_url: str = Field("127.0.0.1:8001", description="Triton gRPC address, for --backend triton")
    default_model: str = Field("rotten_tomatoes", description="model used when a request names none")
    train_default: bool = Field(True, description="train the default model at start when it is missing")
    train_examples: int = Field(
        0, ge=0, description="training examples when the default model is trained (0: all)"
    )
    train_epochs: float = Field(2.0, gt=0, le=20, description="epochs when the default model is trained")
    max_texts: int = Field(256, ge=1, description="texts per request at most")
    max_text_chars: int = Field(20_000, ge=1, description="characters per text at most")
    batch_size: int = Field(32, ge=1, le=256, description="texts per inference batch")
    intra_op_threads: int = Field(0, ge=0, description="ONNX Runtime threads (0: one per core)")
    model_versions: dict[str, str] = Field(
        default_factory=dict, description="model → version to serve; unpinned models follow their CURRENT pointer"
    )
    adapt_workers: int = Field(1, ge=0, le=16, description="Adapt workers this replica runs at once (0: none)")
    adapt_heartbeat_timeout_s: float = Field(
        30.0, gt=0, le=3600, description="an Adapt worker silent this long is taken for lost and restarted"
    )
    max_adapt_examples: int = Field(50_000, ge=2, description="labelled examples per Adapt call at most")
    adapter_cache_bytes: int = Field(256 << 20, ge=1 << 20, description="memory for loaded tenant adapters")
    adapter_batch_wait_ms: float = Field(
        2.0, ge=0, le=100, description="how long a tenant batch waits for other tenants' texts"
    )
    adapter_fast_paths: int = Field(
        2, ge=0, le=64, description="hot LoRA tenants given a merged, compiled graph (each a copy of the layers)"
    )
    adapter_hot_after: int = Field(
        4, ge=1, description="requests within the hot window after which a LoRA tenant gets a fast path"
    )
    adapter_hot_window_s: float = Field(
        10.0, gt=0, description="the hot window; a fast path idle this long may give way to a hotter tenant"
    )
    adapter_scheduler: Literal["deadline", "fifo"] = Field(
        "deadline",
        description="deadline: batches formed by measured cost, earliest gRPC deadline first; fifo: arrival order",
    )
    adapter_cold_start: Literal["hidden", "wait"] = Field(
        "hidden",
        description="hidden: serve a cold tenant on the shared path while its fast path is prepared; "
        "wait: hold its requests until the fast path is ready (load-then-serve)",
    )

    @field_validator("train_examples")
    @classmethod
    def _whole_batch(cls, value: int) -> int:
        if 0 < value < 32:
            raise ValueError("must be 0 (every training example) or at least 32, one batch")
        return value


def model_info(model: LoadedModel, is_default: bool) -> earlyexit_pb2.ModelInfo:
    manifest = model.manifest
    return earlyexit_pb2.ModelInfo(
        name=manifest.name,
        version=manifest.version,
        kind=_KINDS[manifest.kind],
        base_model=manifest.base_model,
        dataset=manifest.dataset,
        labels=manifest.labels,
        num_layers=manifest.num_layers,
        max_tokens=manifest.max_tokens,
        supported_modes=[MODE_CODES[mode] for mode in manifest.modes],
        default_policy=policy_to_proto(manifest.policy),
        token_hash=_HASHES.get(manifest.token_hash or "", earlyexit_pb2.TOKEN_HASH_UNSPECIFIED),
        operating_points=[
            earlyexit_pb2.OperatingPoint(
                policy=policy_to_proto(point.exit_policy),
                accuracy=point.accuracy,
                mean_layers=point.mean_layers,
                mean_flops=point.mean_flops,
                throughput=point.throughput,
            )
            for point in manifest.operating_points
        ],
        is_default=is_default,
    )


class EarlyExitServicer(earlyexit_pb2_grpc.EarlyExitServiceServicer):
    """Calls reach it only once the service has loaded (the runtime's readiness gate)."""

    def __init__(self, service: EarlyExitService) -> None:
        self.service = service

    @property
    def served(self) -> Generation[Served]:
        assert self.service.served is not None
        return self.service.served

    async def Classify(
        self, request: earlyexit_pb2.ClassifyRequest, context: grpc.aio.ServicerContext
    ) -> earlyexit_pb2.ClassifyResponse:
        if request.task:
            return await self._classify_task(request, context.time_remaining())
        requested = policy_from_proto(request.policy) if request.HasField("policy") else None
        async with self.served.use() as served:
            model, policy, results = await served.classifier.classify(list(request.texts), request.model, requested)
        manifest = model.manifest
        for result in results:
            EXIT_LAYERS.labels(manifest.name, policy.mode.value).observe(result.exit_layer)
        TEXTS.labels(manifest.name, policy.mode.value).inc(len(results))
        return earlyexit_pb2.ClassifyResponse(
            model=manifest.name,
            model_version=manifest.version,
            backend=served.backend.runtime,
            policy=policy_to_proto(policy),
            labels=manifest.labels,
            results=[classification_to_proto(result, manifest.labels) for result in results],
        )

    @staticmethod
    def _task_check(request: earlyexit_pb2.ClassifyRequest | earlyexit_pb2.ExplainRequest) -> Validator:
        check = Validator()
        check.check(not request.model, "model", "must be empty when a task is named (the task names its adapter)")
        check.check(not request.HasField("policy"), "policy", "adapted tasks run every layer; leave it unset")
        return check

    async def _classify_task(
        self, request: earlyexit_pb2.ClassifyRequest, deadline_s: float | None
    ) -> earlyexit_pb2.ClassifyResponse:
        check = self._task_check(request)
        tenant = acting_tenant(check, request.tenant)
        classifier = self.served.value.classifier
        classifier.validate_texts(request.texts)
        check.raise_if_any()
        tenants = await self.service.tenants()
        try:
            adapter, encoded, logits = await tenants.classify(list(request.texts), tenant, request.task, deadline_s)
        except ValueError as exc:
            raise InvalidInput.single("task", str(exc)) from None
        manifest = adapter.manifest
        depth = tenants.backbone.manifest.num_layers
        TEXTS.labels(f"{manifest.tenant}.{manifest.task}", "adapter").inc(len(logits))
        return earlyexit_pb2.ClassifyResponse(
            model=manifest.task,
            model_version=manifest.version,
            backend=self.service.served.value.backend.runtime if self.service.served else "",
            labels=manifest.labels,
            results=[
                classification_to_proto(logits_result(values, text, depth), manifest.labels)
                for values, text in zip(logits, encoded, strict=True)
            ],
        )

    async def Explain(
        self, request: earlyexit_pb2.ExplainRequest, context: grpc.aio.ServicerContext
    ) -> earlyexit_pb2.ExplainResponse:
        methods, steps, target = options_from_proto(request.options)
        texts = list(request.texts)
        if request.task:
            check = self._task_check(request)
            tenant = acting_tenant(check, request.tenant)
            self.served.value.classifier.validate_texts(texts)
            check.raise_if_any()
            tenants = await self.service.tenants()
            try:
                adapter, explained = await explain_task(
                    tenants, self.service.adapter_attributor, texts, tenant, request.task, context.time_remaining(),
                    methods, steps, target,
                )  # fmt: skip
            except ValueError as exc:
                raise InvalidInput.single("task", str(exc)) from None
            manifest = adapter.manifest
            return earlyexit_pb2.ExplainResponse(
                model=manifest.task,
                model_version=manifest.version,
                backend=self.served.value.backend.runtime,
                labels=manifest.labels,
                explanations=[explanation_to_proto(e, manifest.labels) for e in explained],
            )
        requested = policy_from_proto(request.policy) if request.HasField("policy") else None
        async with self.served.use() as served:
            explainer = EarlyExitExplainer(served.classifier, self.service.attributor)
            model, policy, explained = await explainer.explain(texts, request.model, requested, methods, steps, target)
        labels = model.manifest.labels
        return earlyexit_pb2.ExplainResponse(
            model=model.manifest.name,
            model_version=model.manifest.version,
            backend=served.backend.runtime,
            policy=policy_to_proto(policy),
            labels=labels,
            explanations=[explanation_to_proto(e, labels) for e in explained],
        )

    async def Adapt(self, request: earlyexit_pb2.AdaptRequest, context: grpc.aio.ServicerContext):
        return await self.service.adapt_face.adapt(request)

    async def GetOperation(self, request: earlyexit_pb2.GetOperationRequest, context: grpc.aio.ServicerContext):
        return earlyexit_pb2.GetOperationResponse(operation=await self.service.adapt_face.get(request.id))

    async def CancelOperation(
        self, request: earlyexit_pb2.CancelOperationRequest, context: grpc.aio.ServicerContext
    ):
        return earlyexit_pb2.CancelOperationResponse(operation=await self.service.adapt_face.cancel(request.id))

    async def ListAdapters(self, request: earlyexit_pb2.ListAdaptersRequest, context: grpc.aio.ServicerContext):
        return await self.service.adapt_face.list(request.tenant)

    async def ListModels(
        self, request: earlyexit_pb2.ListModelsRequest, context: grpc.aio.ServicerContext
    ) -> earlyexit_pb2.ListModelsResponse:
        classifier = self.served.value.classifier
        default = classifier.default_model
        return earlyexit_pb2.ListModelsResponse(
            models=[model_info(model, name == default) for name, model in sorted(classifier.models.items())]
        )


def classification_to_proto(result: TextResult, labels: list[str]) -> earlyexit_pb2.Classification:
    return earlyexit_pb2.Classification(
        label=labels[result.label_index],
        label_index=result.label_index,
        probabilities=result.probabilities.tolist(),
        exit_layer=result.exit_layer,
        entropy=result.entropy,
        flops=result.flops,
        token_exits=[earlyexit_pb2.TokenExit(token=token, exit_layer=layer) for token, layer in result.token_exits or ()],
        token_count=result.token_count,
        truncated=result.truncated,
    )


def explanation_to_proto(explained: Explained, labels: list[str]) -> earlyexit_pb2.Explanation:
    trace = explained.trace
    return earlyexit_pb2.Explanation(
        classification=classification_to_proto(explained.result, labels),
        attributions=[attribution_to_proto(explained.explanation.words, a, labels) for a in explained.explanation.attributions],
        exit_trace=earlyexit_pb2.ExitTrace(
            layers=[
                earlyexit_pb2.LayerPrediction(
                    layer=step.layer,
                    label=labels[step.label_index],
                    label_index=step.label_index,
                    confidence=step.confidence,
                    entropy=step.entropy,
                    streak=step.streak,
                )
                for step in trace.layers
            ],
            exit_layer=trace.exit_layer,
            rule=trace.rule,
        ),
    )


def build_backend(settings: EarlyExitSettings, models: list[StoredModel]) -> EarlyExitBackend:
    if settings.backend == "triton":
        from services.earlyexit.backends.triton import TritonBackend

        return TritonBackend(settings.triton_url, models)
    from services.earlyexit.backends.onnx import OnnxRuntimeBackend

    return OnnxRuntimeBackend(models, threads=settings.intra_op_threads)


@dataclass(frozen=True)
class Served:
    """One generation of served models: a reload builds the next one whole."""

    backend: EarlyExitBackend
    classifier: EarlyExitClassifier

    @property
    def versions(self) -> dict[str, str]:
        return {name: model.manifest.version for name, model in self.classifier.models.items()}

    @staticmethod
    async def close(served: Served) -> None:
        await served.backend.close()


class EarlyExitService(Service):
    name = "earlyexit"
    settings_class = EarlyExitSettings
    settings: EarlyExitSettings

    def __init__(self, settings: EarlyExitSettings) -> None:
        super().__init__(settings)
        self.served: Generation[Served] | None = None
        self.jobs = JobStore(settings.models_dir, settings.adapt_heartbeat_timeout_s)
        self.workers = AdaptWorkers(self.jobs, settings.models_dir, settings.adapt_workers)
        self.adapt_face = AdaptFace(self.jobs, settings.models_dir, settings.max_adapt_examples, self.workers.wake)
        self._tenants: TenantClassifier | None = None
        self._backbone: StoredBackbone | None = None
        self._tenants_lock = asyncio.Lock()
        self._attributors: dict[tuple[str, str], GradientAttributor] = {}
        self._attributors_lock = threading.Lock()
        self._base_encoder: Any = None  # the torch base model adapters' gradients run on, once asked for
        self._base_encoder_lock = threading.Lock()  # captum hooks the shared encoder: one at a time

    def attributor(self, model: LoadedModel) -> GradientAttributor:
        """The model's PyTorch copy for gradient attributions, loaded on first use (blocking)."""
        from services.earlyexit.backends.torch_explain import TorchAttributor

        key = (model.manifest.name, model.manifest.version)
        with self._attributors_lock:
            if key not in self._attributors:
                served = self.served.value.versions if self.served is not None else {}
                for stale in [k for k in self._attributors if served.get(k[0]) != k[1]]:
                    del self._attributors[stale]  # a reload moved the model on
                self._attributors[key] = TorchAttributor.from_stored(model.stored)
            return self._attributors[key]

    def adapter_attributor(self, adapter: TenantAdapter) -> GradientAttributor:
        """A tenant adapter over the base model in PyTorch, for integrated gradients (blocking);
        the base encoder is loaded once, each adapter's module is a view of its served arrays."""
        from services.earlyexit.backends.torch_explain import AdapterModule, TorchAttributor

        with self._attributors_lock:
            if self._base_encoder is None:
                from services.earlyexit.backends.torch_model import load_base_encoder

                self._base_encoder = load_base_encoder()
            return TorchAttributor(AdapterModule(self._base_encoder, adapter), lock=self._base_encoder_lock)

    async def _run_backbone(self, work: Callable[[BackboneGraphs], T], prepare: bool = False) -> T:
        """On whichever generation serves now: a reload builds a backend without the backbone."""
        assert self.served is not None and self._backbone is not None
        async with self.served.use() as served:
            if not served.backend.has_backbone:
                await asyncio.to_thread(served.backend.attach_backbone, self._backbone)
            return await served.backend.run_backbone(work, prepare)

    async def tenants(self) -> TenantClassifier:
        """Tenant adapters on the shared backbone, loaded when the first task is asked for."""
        async with self._tenants_lock:
            if self._tenants is None:
                backbone = current_backbone(self.settings.models_dir, BASE_MODEL_NAME)
                if backbone is None:
                    raise NotFound("no tenant has adapted a task here yet (no backbone is published); call Adapt first")
                self._backbone = backbone
                settings = self.settings
                batching = BatchingConfig(max_batch_size=settings.batch_size, max_wait_s=settings.adapter_batch_wait_ms / 1000)
                cache = AdapterCache(settings.models_dir, settings.adapter_cache_bytes)
                fast_paths = FastPathConfig(
                    settings.adapter_fast_paths,
                    settings.adapter_hot_after,
                    settings.adapter_hot_window_s,
                    settings.adapter_cold_start == "wait",
                )
                scheduling = (
                    SchedulingConfig(max_batch_size=settings.batch_size) if settings.adapter_scheduler == "deadline" else None
                )
                tenants = TenantClassifier(backbone, cache, self._run_backbone, batching, fast_paths, scheduling)
                await tenants.start()
                self._tenants = tenants
            return self._tenants

    def _model_bundle(self, name: str) -> Bundle:
        return model_bundle("earlyexit", "early-exit", ModelVersions(models_root(self.settings.models_dir)), name, self.settings)

    def bundles(self) -> Sequence[BundleRequest]:
        settings = self.settings
        default = self._model_bundle(settings.default_model)
        if not settings.train_default or default.present():
            return ()
        # The plain classifier first: the baseline, and the multi-exit model's teacher.
        command = ["train", "earlyexit", settings.default_model, "--variant", "plain", "--variant", "multiexit"]
        command += ["--examples", str(settings.train_examples), "--epochs", str(settings.train_epochs)]
        env = {"ROSEMESH_EARLYEXIT_MODELS_DIR": str(settings.models_dir)}
        return [BundleRequest(default, command, minutes=15, env=env)]

    @property
    def service_names(self) -> Sequence[str]:
        return [SERVICE_NAME]

    def register(self, server: grpc.aio.Server) -> None:
        earlyexit_pb2_grpc.add_EarlyExitServiceServicer_to_server(EarlyExitServicer(self), server)

    async def _build(self, models: list[StoredModel]) -> Served:
        settings = self.settings
        # Opening sessions takes seconds of CPU: off the loop, which keeps serving meanwhile.
        backend = await asyncio.to_thread(build_backend, settings, models)
        limits = ClassifyLimits(settings.max_texts, settings.max_text_chars, settings.batch_size)
        runner = functools.partial(functools.partial, backend.classify)  # model name → BatchRunner
        classifier = EarlyExitClassifier(models, runner, settings.default_model, limits)
        await backend.start()
        return Served(backend, classifier)

    async def load(self, progress: StartProgress) -> None:
        settings = self.settings
        for name in dict.fromkeys([settings.default_model, *settings.model_versions]):
            await wait_for_bundle(self._model_bundle(name), progress.report)
        models = list_models(settings.models_dir, settings.model_versions)
        progress.report(f"loading {len(models)} early-exit models on {settings.backend}")
        self.served = Generation(await self._build(models), Served.close)
        report_served_versions(self.name, self.served.value.versions)
        if settings.adapt_workers:
            self.workers.start()


    async def reload(self) -> str:
        assert self.served is not None
        models = list_models(self.settings.models_dir, self.settings.model_versions)
        before = self.served.value.versions
        wanted = {model.name: model.manifest.version for model in models}
        if wanted == before:
            return "no model changed version"
        if self.settings.backend == "triton":
            # Triton serves the graphs its repository was rendered with.
            raise RuntimeError(
                f"Triton serves {before}; to serve {wanted}, render the repository again and restart"
            )
        await self.served.swap(await self._build(models))
        report_served_versions(self.name, wanted)
        return f"now serving {wanted}"

    async def stop(self) -> None:
        await self.workers.stop()
        if self._tenants is not None:
            await self._tenants.stop()
        if self.served is not None:
            await self.served.close()
