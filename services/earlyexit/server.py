"""The early-exit service's face: validates requests, maps protobuf to the core and back."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Literal

import grpc
from prometheus_client import Counter, Histogram
from pydantic import Field
from pydantic_settings import SettingsConfigDict
from rosemesh.earlyexit.v1 import earlyexit_pb2, earlyexit_pb2_grpc

from services.common.errors import InvalidInput
from services.earlyexit.core.bundle import StoredModel, list_models
from services.earlyexit.core.classifier import ClassifyLimits, EarlyExitClassifier, LoadedModel
from services.earlyexit.core.policy import MODE_CODES, ExitPolicy, ModelKind
from services.earlyexit.core.ports import EarlyExitBackend
from services.runtime.config import ServiceSettings
from services.runtime.server import Service

SERVICE_NAME = earlyexit_pb2.DESCRIPTOR.services_by_name["EarlyExitService"].full_name
_MODES_BY_CODE = {code: mode for mode, code in MODE_CODES.items()}
_KINDS = {
    ModelKind.MULTI_EXIT: earlyexit_pb2.MODEL_KIND_MULTI_EXIT,
    ModelKind.HASHEE: earlyexit_pb2.MODEL_KIND_HASHEE,
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
        4000, ge=32, description="training examples when the default model is trained"
    )
    train_epochs: float = Field(2.0, gt=0, le=20, description="epochs when the default model is trained")
    max_texts: int = Field(256, ge=1, description="texts per request at most")
    max_text_chars: int = Field(20_000, ge=1, description="characters per text at most")
    batch_size: int = Field(32, ge=1, le=256, description="texts per inference batch")
    intra_op_threads: int = Field(0, ge=0, description="ONNX Runtime threads (0: one per core)")


def policy_from_proto(message: earlyexit_pb2.ExitPolicy) -> ExitPolicy | None:
    """None when the request leaves the policy to the model."""
    if message.mode == earlyexit_pb2.EXIT_MODE_UNSPECIFIED:
        return None
    if message.mode not in _MODES_BY_CODE:
        known = ", ".join(earlyexit_pb2.ExitMode.Name(code) for code in _MODES_BY_CODE)
        raise InvalidInput.single("policy.mode", f"unknown exit mode {message.mode}; expected one of {known}")
    return ExitPolicy(
        _MODES_BY_CODE[message.mode],
        static_layer=message.static_layer if message.mode == earlyexit_pb2.EXIT_MODE_STATIC else None,
        entropy_threshold=message.entropy_threshold if message.HasField("entropy_threshold") else None,
        patience=message.patience if message.HasField("patience") else None,
    )


def policy_to_proto(policy: ExitPolicy) -> earlyexit_pb2.ExitPolicy:
    message = earlyexit_pb2.ExitPolicy(mode=MODE_CODES[policy.mode], static_layer=policy.static_layer or 0)
    if policy.entropy_threshold is not None:
        message.entropy_threshold = policy.entropy_threshold
    if policy.patience is not None:
        message.patience = policy.patience
    return message


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
    def __init__(self, classifier: EarlyExitClassifier, runtime: str) -> None:
        self.classifier = classifier
        self.runtime = runtime

    async def Classify(
        self, request: earlyexit_pb2.ClassifyRequest, context: grpc.aio.ServicerContext
    ) -> earlyexit_pb2.ClassifyResponse:
        requested = policy_from_proto(request.policy) if request.HasField("policy") else None
        model, policy, results = await self.classifier.classify(list(request.texts), request.model, requested)
        manifest = model.manifest
        for result in results:
            EXIT_LAYERS.labels(manifest.name, policy.mode.value).observe(result.exit_layer)
        TEXTS.labels(manifest.name, policy.mode.value).inc(len(results))
        return earlyexit_pb2.ClassifyResponse(
            model=manifest.name,
            model_version=manifest.version,
            backend=self.runtime,
            policy=policy_to_proto(policy),
            labels=manifest.labels,
            results=[
                earlyexit_pb2.Classification(
                    label=manifest.labels[result.label_index],
                    label_index=result.label_index,
                    probabilities=result.probabilities.tolist(),
                    exit_layer=result.exit_layer,
                    entropy=result.entropy,
                    flops=result.flops,
                    token_exits=[
                        earlyexit_pb2.TokenExit(token=token, exit_layer=layer)
                        for token, layer in result.token_exits or ()
                    ],
                    token_count=result.token_count,
                    truncated=result.truncated,
                )
                for result in results
            ],
        )

    async def ListModels(
        self, request: earlyexit_pb2.ListModelsRequest, context: grpc.aio.ServicerContext
    ) -> earlyexit_pb2.ListModelsResponse:
        default = self.classifier.default_model
        return earlyexit_pb2.ListModelsResponse(
            models=[
                model_info(model, name == default) for name, model in sorted(self.classifier.models.items())
            ]
        )


def build_backend(settings: EarlyExitSettings, models: list[StoredModel]) -> EarlyExitBackend:
    if settings.backend == "triton":
        from services.earlyexit.backends.triton import TritonBackend

        return TritonBackend(settings.triton_url, models)
    from services.earlyexit.backends.onnx import OnnxRuntimeBackend

    return OnnxRuntimeBackend(models, threads=settings.intra_op_threads)


def ensure_default_model(settings: EarlyExitSettings) -> None:
    """Train the default model when no model of that name exists (only data sets we know)."""
    if not settings.train_default or any(
        m.name == settings.default_model for m in list_models(settings.models_dir)
    ):
        return
    from services.earlyexit.offline.train import TrainConfig, train_dataset
    from services.offline.datasets import CLASSIFICATION_DATASETS

    if settings.default_model not in CLASSIFICATION_DATASETS:
        raise ValueError(
            f"default model {settings.default_model!r} does not exist and is not a data set this service can "
            f"train ({', '.join(sorted(CLASSIFICATION_DATASETS))}); run `rosemesh train earlyexit` first"
        )
    config = TrainConfig(epochs=settings.train_epochs, train_limit=settings.train_examples)
    train_dataset(settings.default_model, settings.models_dir, ["multiexit"], config)


class EarlyExitService(Service):
    name = "earlyexit"
    settings_class = EarlyExitSettings

    @classmethod
    def prepare(cls, settings: ServiceSettings) -> None:
        assert isinstance(settings, EarlyExitSettings)
        ensure_default_model(settings)

    def __init__(self, settings: EarlyExitSettings) -> None:
        self.settings = settings
        ensure_default_model(settings)
        models = list_models(settings.models_dir)
        self.backend = build_backend(settings, models)
        limits = ClassifyLimits(settings.max_texts, settings.max_text_chars, settings.batch_size)
        runner = functools.partial(functools.partial, self.backend.classify)  # model name → BatchRunner
        self.classifier = EarlyExitClassifier(models, runner, settings.default_model, limits)
        self.servicer = EarlyExitServicer(self.classifier, self.backend.runtime)

    @property
    def service_names(self) -> Sequence[str]:
        return [SERVICE_NAME]

    def register(self, server: grpc.aio.Server) -> None:
        earlyexit_pb2_grpc.add_EarlyExitServiceServicer_to_server(self.servicer, server)

    async def start(self) -> None:
        await self.backend.start()

    async def stop(self) -> None:
        await self.backend.close()
