"""The multi-label service's face: validates, embeds each batch with one call, applies a policy."""

from __future__ import annotations

from collections.abc import Sequence

import grpc
import numpy as np
from pydantic import Field
from pydantic_settings import SettingsConfigDict
from rosemesh.multilabel.v1 import multilabel_pb2, multilabel_pb2_grpc

from services.adapters.embedding_service import RemoteEmbedder
from services.common.bundles import Bundle, BundleRequest, model_bundle, wait_for_bundle
from services.common.errors import Validator
from services.common.explain import MAX_EXPLAIN_TEXTS
from services.multilabel.backends.model_store import DirectoryModelStore
from services.multilabel.convert import POLICIES_BY_CODE, POLICY_CODES
from services.multilabel.core.bundle import Policy, ServedModel, StoredMultiLabelModel
from services.multilabel.core.explain import explain_multilabel
from services.multilabel.core.ports import ModelStore, TextEmbedder
from services.multilabel.core.scoring import apply_thresholds
from services.runtime.config import ServiceSettings
from services.runtime.explain_convert import attribution_to_proto, options_from_proto
from services.runtime.metrics import report_served_versions
from services.runtime.server import Service, StartProgress

SERVICE_NAME = multilabel_pb2.DESCRIPTOR.services_by_name["MultiLabelService"].full_name


class MultiLabelSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="ROSEMESH_MULTILABEL_")

    port: int = Field(50054, ge=0, le=65535)
    metrics_port: int = Field(9467, ge=0, le=65535)
    embedding_target: str = Field("127.0.0.1:50051", description="address of the embedding service")
    embedding_timeout_s: float = Field(10.0, gt=0, description="deadline of each embedding call")
    default_model: str = Field("toxicity", description="model used when a request names none")
    train_default: bool = Field(True, description="train the default model at start when it is missing")
    model_versions: dict[str, str] = Field(
        default_factory=dict, description="model → version to serve; unpinned models follow their CURRENT pointer"
    )
    max_texts: int = Field(256, ge=1, description="texts per request at most")
    max_text_bytes: int = Field(32 * 1024, ge=1, description="UTF-8 bytes per text at most")


class MultiLabelServicer(multilabel_pb2_grpc.MultiLabelServiceServicer):
    """Calls reach it only once the service has loaded (the runtime's readiness gate)."""

    def __init__(self, service: MultiLabelService) -> None:
        self.settings = service.settings
        self.service = service

    @property
    def models(self) -> dict[str, ServedModel]:
        return self.service.models

    @property
    def embedder(self) -> TextEmbedder:
        assert self.service.embedder is not None
        return self.service.embedder

    def _validate(
        self, request: multilabel_pb2.PredictRequest | multilabel_pb2.ExplainRequest
    ) -> tuple[StoredMultiLabelModel, Policy]:
        check = Validator()
        limit = self.settings.max_texts if isinstance(request, multilabel_pb2.PredictRequest) else MAX_EXPLAIN_TEXTS
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
        models = self.models  # one generation for the whole call, whatever a reload does meanwhile
        served = models.get(name)
        model = None
        if check.check(
            served is not None,
            "model",
            f"unknown model {name!r}; available: {', '.join(sorted(models))}",
        ):
            assert served is not None
            version = request.version or served.default_version
            model = served.versions.get(version)
            check.check(
                model is not None,
                "version",
                f"model {name!r} has no version {version!r}; it has {', '.join(sorted(served.versions))}",
            )
        check.check(
            request.policy in POLICIES_BY_CODE or request.policy == 0, "policy", f"unknown policy {request.policy}"
        )
        check.raise_if_any()
        assert model is not None
        policy = POLICIES_BY_CODE.get(request.policy, model.manifest.default_policy)
        return model, policy

    async def Predict(
        self, request: multilabel_pb2.PredictRequest, context: grpc.aio.ServicerContext
    ) -> multilabel_pb2.PredictResponse:
        model, policy = self._validate(request)
        vectors = await self.embedder.embed(list(request.texts))
        probabilities = model.classifier(policy).probabilities(vectors)
        thresholds = model.thresholds(policy)
        chosen = apply_thresholds(probabilities, thresholds)
        labels = model.manifest.labels
        predictions = [
            prediction_to_proto(p, thresholds, c, labels) for p, c in zip(probabilities, chosen, strict=True)
        ]
        return multilabel_pb2.PredictResponse(
            model=model.manifest.name,
            version=model.manifest.version,
            policy=POLICY_CODES[policy],
            predictions=predictions,
        )

    async def Explain(
        self, request: multilabel_pb2.ExplainRequest, context: grpc.aio.ServicerContext
    ) -> multilabel_pb2.ExplainResponse:
        methods, steps, target = options_from_proto(request.options)
        model, policy = self._validate(request)
        explained = await explain_multilabel(model, policy, self.embedder, list(request.texts), methods, steps, target)
        labels, thresholds = model.manifest.labels, model.thresholds(policy)
        return multilabel_pb2.ExplainResponse(
            model=model.manifest.name,
            version=model.manifest.version,
            policy=POLICY_CODES[policy],
            explanations=[
                multilabel_pb2.Explanation(
                    prediction=prediction_to_proto(e.probabilities, thresholds, e.chosen, labels),
                    attributions=[
                        attribution_to_proto(e.explanation.words, a, labels) for a in e.explanation.attributions
                    ],
                )
                for e in explained
            ],
        )

    async def ListModels(
        self, request: multilabel_pb2.ListModelsRequest, context: grpc.aio.ServicerContext
    ) -> multilabel_pb2.ListModelsResponse:
        infos = []
        for name, served in sorted(self.models.items()):
            for version, model in sorted(served.versions.items()):
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
                        is_default=name == self.settings.default_model and version == served.default_version,
                    )
                )
        return multilabel_pb2.ListModelsResponse(models=infos)


def prediction_to_proto(
    probabilities: np.ndarray, thresholds: np.ndarray, chosen: np.ndarray, labels: list[str]
) -> multilabel_pb2.Prediction:
    order = np.argsort(-probabilities, kind="stable")
    return multilabel_pb2.Prediction(
        labels=[labels[j] for j in order if chosen[j]],
        scores=[
            multilabel_pb2.LabelScore(label=label, probability=float(p), threshold=float(t), predicted=bool(c))
            for label, p, t, c in zip(labels, probabilities, thresholds, chosen, strict=True)
        ],
    )


class MultiLabelService(Service):
    name = "multilabel"
    settings_class = MultiLabelSettings
    settings: MultiLabelSettings

    def __init__(self, settings: MultiLabelSettings) -> None:
        super().__init__(settings)
        self.store: ModelStore = DirectoryModelStore(settings.models_dir)
        self.models: dict[str, ServedModel] = {}
        self.embedder: RemoteEmbedder | None = None

    def _model_bundle(self, name: str) -> Bundle:
        return model_bundle("multilabel", "multi-label", self.store.versions, name, self.settings)

    def bundles(self) -> Sequence[BundleRequest]:
        settings = self.settings
        default = self._model_bundle(settings.default_model)
        if not settings.train_default or default.present():
            return ()
        command = ["train", "multilabel", settings.default_model, "--embedding-target", settings.embedding_target]
        env = {"ROSEMESH_MULTILABEL_MODELS_DIR": str(settings.models_dir)}
        return [BundleRequest(default, command, minutes=3, env=env)]

    @property
    def service_names(self) -> Sequence[str]:
        return [SERVICE_NAME]

    def register(self, server: grpc.aio.Server) -> None:
        multilabel_pb2_grpc.add_MultiLabelServiceServicer_to_server(MultiLabelServicer(self), server)

    async def load(self, progress: StartProgress) -> None:
        settings = self.settings
        for name in dict.fromkeys([settings.default_model, *settings.model_versions]):
            await wait_for_bundle(self._model_bundle(name), progress.report)
        progress.report("loading the multi-label models")
        self._serve(self.store.load(settings.model_versions))
        # The aio channel binds to the running loop, so it is created here.
        self.embedder = RemoteEmbedder(
            settings.embedding_target, settings.embedding_timeout_s, **settings.client_security()
        )

    def _serve(self, models: dict[str, ServedModel]) -> None:
        self.models = models
        report_served_versions(self.name, {name: m.default_version for name, m in models.items()})

    async def reload(self) -> str:
        before = {name: m.default_version for name, m in self.models.items()}
        self._serve(self.store.load(self.settings.model_versions))
        changed = {n: m.default_version for n, m in self.models.items() if before.get(n) != m.default_version}
        return f"now serving {changed}" if changed else "no model changed version"

    async def stop(self) -> None:
        if self.embedder is not None:
            await self.embedder.close()
