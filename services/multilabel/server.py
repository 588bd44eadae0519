"""The multi-label service's face: validates, embeds each batch with one call, applies a policy."""

from __future__ import annotations

from collections.abc import Sequence

import grpc
import numpy as np
from pydantic import Field
from pydantic_settings import SettingsConfigDict
from rosemesh.multilabel.v1 import multilabel_pb2, multilabel_pb2_grpc

from services.common.errors import BackendUnavailable, Validator
from services.embedding.client import EmbeddingClient
from services.multilabel.core.bundle import Policy, StoredMultiLabelModel, list_models
from services.multilabel.core.scoring import apply_thresholds
from services.runtime.config import ServiceSettings
from services.runtime.server import Service

SERVICE_NAME = multilabel_pb2.DESCRIPTOR.services_by_name["MultiLabelService"].full_name
POLICY_CODES = {
    Policy.FIXED: multilabel_pb2.POLICY_FIXED,
    Policy.TUNED: multilabel_pb2.POLICY_TUNED,
    Policy.META: multilabel_pb2.POLICY_META,
}
_POLICIES = {code: policy for policy, code in POLICY_CODES.items()}


class MultiLabelSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="ROSEMESH_MULTILABEL_")

    port: int = Field(50054, ge=0, le=65535)
    metrics_port: int = Field(9467, ge=0, le=65535)
    embedding_target: str = Field("127.0.0.1:50051", description="address of the embedding service")
    embedding_timeout_s: float = Field(10.0, gt=0, description="deadline of each embedding call")
    default_model: str = Field("toxicity", description="model used when a request names none")
    train_default: bool = Field(True, description="train the default model at start when it is missing")
    max_texts: int = Field(256, ge=1, description="texts per request at most")
    max_text_bytes: int = Field(32 * 1024, ge=1, description="UTF-8 bytes per text at most")


class MultiLabelServicer(multilabel_pb2_grpc.MultiLabelServiceServicer):
    def __init__(
        self,
        settings: MultiLabelSettings,
        models: dict[str, dict[str, StoredMultiLabelModel]],
        embeddings: EmbeddingClient,
    ) -> None:
        self.settings = settings
        self.models = models
        self.embeddings = embeddings

    def _validate(self, request: multilabel_pb2.PredictRequest) -> tuple[StoredMultiLabelModel, Policy]:
        check = Validator()
        limit = self.settings.max_texts
        if check.check(len(request.texts) > 0, "texts", "must contain at least one text"):
            check.check(
                len(request.texts) <= limit,
                "texts",
                f"{len(request.texts)} texts exceed the limit of {limit} per request",
            )
        for index, text in enumerate(request.texts[: limit + 1]):
            if check.check(bool(text.strip()), f"texts[{index}]", "must not be empty or only whitespace"):
                size = len(text.encode("utf-8"))
                check.check(
                    size <= self.settings.max_text_bytes,
                    f"texts[{index}]",
                    f"{size} bytes exceed the limit of {self.settings.max_text_bytes} bytes per text",
                )
        name = request.model or self.settings.default_model
        versions = self.models.get(name)
        model = None
        if check.check(
            versions is not None,
            "model",
            f"unknown model {name!r}; available: {', '.join(sorted(self.models))}",
        ):
            assert versions is not None
            version = request.version or max(versions)
            model = versions.get(version)
            check.check(
                model is not None,
                "version",
                f"model {name!r} has no version {version!r}; it has {', '.join(sorted(versions))}",
            )
        check.check(
            request.policy in _POLICIES or request.policy == 0, "policy", f"unknown policy {request.policy}"
        )
        check.raise_if_any()
        assert model is not None
        policy = _POLICIES.get(request.policy, model.manifest.default_policy)
        return model, policy

    async def Predict(
        self, request: multilabel_pb2.PredictRequest, context: grpc.aio.ServicerContext
    ) -> multilabel_pb2.PredictResponse:
        model, policy = self._validate(request)
        try:
            embedded = await self.embeddings.embed(
                list(request.texts), timeout_s=self.settings.embedding_timeout_s
            )
        except grpc.aio.AioRpcError as exc:
            raise BackendUnavailable(
                f"embedding service at {self.settings.embedding_target}: {exc.details()}"
            ) from exc
        probabilities = model.classifier(policy).probabilities(embedded.vectors)
        thresholds = model.thresholds(policy)
        chosen = apply_thresholds(probabilities, thresholds)
        labels = model.manifest.labels
        predictions = []
        for row_probabilities, row_chosen in zip(probabilities, chosen, strict=True):
            order = np.argsort(-row_probabilities, kind="stable")
            predictions.append(
                multilabel_pb2.Prediction(
                    labels=[labels[j] for j in order if row_chosen[j]],
                    scores=[
                        multilabel_pb2.LabelScore(
                            label=label, probability=float(p), threshold=float(t), predicted=bool(c)
                        )
                        for label, p, t, c in zip(
                            labels, row_probabilities, thresholds, row_chosen, strict=True
                        )
                    ],
                )
            )
        return multilabel_pb2.PredictResponse(
            model=model.manifest.name,
            version=model.manifest.version,
            policy=POLICY_CODES[policy],
            predictions=predictions,
        )

    async def ListModels(
        self, request: multilabel_pb2.ListModelsRequest, context: grpc.aio.ServicerContext
    ) -> multilabel_pb2.ListModelsResponse:
        infos = []
        for name, versions in sorted(self.models.items()):
            for version, model in sorted(versions.items()):
                manifest = model.manifest
                infos.append(
                    multilabel_pb2.ModelInfo(
                        name=name,
                        version=version,
                        labels=manifest.labels,
                        dataset=manifest.dataset,
                        encoder=manifest.encoder,
                        default_policy=POLICY_CODES[manifest.default_policy],
                        policies=[
                            multilabel_pb2.PolicyInfo(
                                policy=POLICY_CODES[policy],
                                thresholds=record.thresholds,
                                loss_weights=record.loss_weights,
                                test_metrics=multilabel_pb2.Metrics(**record.test_metrics.model_dump()),
                            )
                            for policy, record in manifest.policies.items()
                        ],
                        is_default=name == self.settings.default_model and version == max(versions),
                    )
                )
        return multilabel_pb2.ListModelsResponse(models=infos)


def ensure_default_model(settings: MultiLabelSettings) -> None:
    """Train the default model, through the embedding service, when it is missing."""
    if not settings.train_default or settings.default_model in list_models(settings.models_dir):
        return
    from services.multilabel.offline.train import MULTILABEL_DATASETS, train_multilabel

    if settings.default_model not in MULTILABEL_DATASETS:
        raise ValueError(
            f"default model {settings.default_model!r} does not exist and is not a data set this service can "
            f"train ({', '.join(sorted(MULTILABEL_DATASETS))}); run `rosemesh train multilabel` first"
        )
    train_multilabel(settings.default_model, settings.models_dir, settings.embedding_target)


class MultiLabelService(Service):
    name = "multilabel"
    settings_class = MultiLabelSettings

    @classmethod
    def prepare(cls, settings: ServiceSettings) -> None:
        assert isinstance(settings, MultiLabelSettings)
        ensure_default_model(settings)

    def __init__(self, settings: MultiLabelSettings) -> None:
        self.settings = settings
        self.models = list_models(settings.models_dir)
        if settings.default_model not in self.models:
            raise ValueError(
                f"default model {settings.default_model!r} is not in {settings.models_dir / 'multilabel'}; "
                "run `rosemesh train multilabel` or start with --train-default"
            )
        self.embeddings: EmbeddingClient | None = None

    @property
    def service_names(self) -> Sequence[str]:
        return [SERVICE_NAME]

    async def start(self) -> None:
        # The aio channel binds to the running loop, so it is created here.
        self.embeddings = EmbeddingClient(
            self.settings.embedding_target,
            timeout_s=self.settings.embedding_timeout_s,
            **self.settings.client_security(),
        )

    def register(self, server: grpc.aio.Server) -> None:
        assert self.embeddings is not None
        multilabel_pb2_grpc.add_MultiLabelServiceServicer_to_server(
            MultiLabelServicer(self.settings, self.models, self.embeddings), server
        )

    async def stop(self) -> None:
        if self.embeddings is not None:
            await self.embeddings.close()
