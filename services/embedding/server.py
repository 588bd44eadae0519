"""The embedding service's face: validates requests, maps protobuf to the core and back."""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Literal

import grpc
from pydantic import Field
from pydantic_settings import SettingsConfigDict
from rosemesh.embedding.v1 import embedding_pb2, embedding_pb2_grpc

from services.common.batching import BatchingConfig
from services.common.bundles import Bundle, BundleRequest, wait_for_bundle
from services.common.tokens import TextEncoder
from services.embedding.backends.cpu import cpu_features, exact_path, fast_path
from services.embedding.bundle import FAST_SUFFIX, MODEL_NAME, ExportedModel, exported_model
from services.embedding.core.embedder import Embedder, EmbedResult
from services.embedding.core.parity import min_cosine
from services.embedding.core.ports import EmbeddingBackend
from services.embedding.faces import select_embedder, timing_headers
from services.embedding.openai_http import OpenAIHttpApi
from services.runtime.config import ServiceSettings
from services.runtime.server import Service, StartProgress

SERVICE_NAME = embedding_pb2.DESCRIPTOR.services_by_name["EmbeddingService"].full_name

log = logging.getLogger(__name__)


class EmbeddingSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="ROSEMESH_EMBEDDING_")

    port: int = Field(50051, ge=0, le=65535)
    metrics_port: int = Field(9464, ge=0, le=65535)
    backend: Literal["openvino", "onnx", "triton"] = Field(
        "openvino", description="runtime for the exact (fp32) tier: openvino (batches; small ones on ONNX Runtime), onnx or triton"
    )
    triton_url: str = Field("127.0.0.1:8001", description="Triton gRPC address, for --backend triton")
    triton_model: str = Field("embedding_minilm", description="model name in the Triton repository")
    fast: bool = Field(True, description=f"also serve the fast tier ({MODEL_NAME}{FAST_SUFFIX}: bf16 on AMX, else int8)")
    plain_cpu_paths: bool = Field(False, description="take the plain paths: no AMX bf16, no VNNI-specific choice")
    max_batch_size: int = Field(128, ge=1, le=1024, description="texts per inference batch at most")
    max_batch_tokens: int = Field(
        512, ge=0, description="padded tokens (rows times the longest) per exact-tier batch; 0: no limit"
    )
    fast_max_batch_tokens: int = Field(
        1024, ge=0, description="the same for the fast tier (AMX's tiles pay off on larger batches)"
    )
    exact_small_batch_rows: int = Field(
        2, ge=0, description="--backend openvino: batches of at most this many texts run on ONNX Runtime (1.3 ms less per lone question here)"
    )
    exact_streams: int = Field(1, ge=1, le=64, description="OpenVINO streams of the exact tier (1: a lone request gets every core)")
    fast_streams: int = Field(2, ge=1, le=64, description="OpenVINO streams of the fast tier, each on its own cores")
    max_wait_ms: float = Field(
        0.0, ge=0, le=1000, description="how long a lone request waits for company (requests that come during a batch share the next)"
    )
    max_queue: int = Field(4096, ge=1, description="texts waiting at most; beyond, RESOURCE_EXHAUSTED")
    max_texts: int = Field(512, ge=1, description="texts per request at most")
    max_text_bytes: int = Field(32 * 1024, ge=1, description="UTF-8 bytes per text at most")
    intra_op_threads: int = Field(0, ge=0, description="ONNX Runtime threads (0: one per core)")
    http: bool = Field(True, description="serve the OpenAI-compatible HTTP API")
    http_port: int = Field(
        8088, ge=0, le=65535, description="OpenAI-compatible HTTP API (POST /v1/embeddings); 0 picks a free port"
    )


def build_backend(settings: EmbeddingSettings, model: ExportedModel) -> EmbeddingBackend:
    if settings.backend == "triton":
        from services.embedding.backends.triton import TritonBackend

        return TritonBackend(settings.triton_url, settings.triton_model)
    from services.embedding.backends.onnx import OnnxRuntimeBackend

    onnx = OnnxRuntimeBackend(model.fp32_path, intra_op_threads=settings.intra_op_threads)
    if settings.backend == "onnx":
        return onnx
    from services.embedding.backends.openvino import OpenVinoBackend
    from services.embedding.backends.routed import RoutedBySize

    streams = min(settings.exact_streams, os.cpu_count() or 1)
    openvino = OpenVinoBackend(model.openvino_path, precision="f32", threads=settings.intra_op_threads, streams=streams)
    return RoutedBySize(onnx, openvino, settings.exact_small_batch_rows) if settings.exact_small_batch_rows else openvino


def embed_response(embedder: Embedder, result: EmbedResult, *, packed: bool) -> embedding_pb2.EmbedResponse:
    if packed:  # one bytes copy of the whole matrix, no per-float work on either side
        embeddings = [embedding_pb2.Embedding(truncated=e.truncated, token_count=e.token_count) for e in result.texts]
        return embedding_pb2.EmbedResponse(
            model=embedder.name,
            dimension=embedder.dimension,
            embeddings=embeddings,
            packed=result.matrix().astype("<f4", copy=False).tobytes(),
        )
    return embedding_pb2.EmbedResponse(
        model=embedder.name,
        dimension=embedder.dimension,
        embeddings=[
            embedding_pb2.Embedding(values=e.vector.tolist(), truncated=e.truncated, token_count=e.token_count)
            for e in result.texts
        ],
    )


@dataclass(frozen=True)
class Parity:
    cosine: float
    reference: str
    cpu_path: str


class EmbeddingServicer(embedding_pb2_grpc.EmbeddingServiceServicer):
    def __init__(
        self,
        settings: EmbeddingSettings,
        embedders: dict[str, Embedder],
        default: str,
        parity: dict[str, Parity],
        features: list[str],
    ) -> None:
        self.settings = settings
        self.embedders = embedders
        self.default = default
        self.parity = parity
        self.cpu_features = features

    def _validate(self, request: embedding_pb2.EmbedRequest) -> Embedder:
        return select_embedder(self.settings, self.embedders, self.default, list(request.texts), request.model)

    async def Embed(
        self, request: embedding_pb2.EmbedRequest, context: grpc.aio.ServicerContext
    ) -> embedding_pb2.EmbedResponse:
        began = time.perf_counter()
        embedder = self._validate(request)
        result = await embedder.embed(list(request.texts))
        context.set_trailing_metadata(tuple(timing_headers(result.timing, time.perf_counter() - began).items()))
        return embed_response(embedder, result, packed=request.encoding == embedding_pb2.VECTOR_ENCODING_PACKED_F32)

    async def ListModels(
        self, request: embedding_pb2.ListModelsRequest, context: grpc.aio.ServicerContext
    ) -> embedding_pb2.ListModelsResponse:
        return embedding_pb2.ListModelsResponse(
            models=[
                embedding_pb2.ModelInfo(
                    name=e.name,
                    dimension=e.dimension,
                    max_tokens=e.max_tokens,
                    backend=e.backend.runtime,
                    precision=e.precision,
                    is_default=e.name == self.default,
                    tier=e.tier,
                    parity=self.parity[e.name].cosine,
                    parity_reference=self.parity[e.name].reference,
                    cpu_path=self.parity[e.name].cpu_path,
                    max_texts_per_request=self.settings.max_texts,
                    max_text_bytes=self.settings.max_text_bytes,
                    max_batch_size=self.settings.max_batch_size,
                    max_batch_tokens=self.settings.max_batch_tokens,
                )
                for e in self.embedders.values()
            ],
            cpu_features=self.cpu_features,
            plain_cpu_paths=self.settings.plain_cpu_paths,
        )


def build_fast_backend(settings: EmbeddingSettings, model: ExportedModel, features: list[str]) -> tuple[EmbeddingBackend, str, str]:
    """The fast tier's runtime for this CPU: (backend, precision, cpu path)."""
    from services.embedding.backends.openvino import OpenVinoBackend

    path = fast_path(features, plain=settings.plain_cpu_paths)
    streams = min(settings.fast_streams, os.cpu_count() or 1)
    if path.precision == "bf16":
        graph, hint = model.openvino_path, "bf16"
    else:  # int8 layers; the rest stays fp32 (never bf16 on the plain path)
        graph, hint = model.int8_path, "f32"
    backend = OpenVinoBackend(graph, precision=hint, threads=settings.intra_op_threads, streams=streams)
    return backend, path.precision, path.cpu_path


class EmbeddingService(Service):
    name = "embedding"
    settings_class = EmbeddingSettings
    settings: EmbeddingSettings

    def __init__(self, settings: EmbeddingSettings) -> None:
        super().__init__(settings)
        self.model = exported_model(settings.models_dir)
        self.embedders: dict[str, Embedder] = {}
        self.parity: dict[str, Parity] = {}
        self.cpu_features: list[str] = []
        self.http_api = OpenAIHttpApi(settings, self.embedders, self.model.name) if settings.http else None

    def _export(self) -> Bundle:
        return Bundle(
            f"the {MODEL_NAME} export",
            self.model.directory,
            lambda: not self.model.missing(fast=self.settings.fast),
            hint="run `rosemesh export embedding`",
        )

    def bundles(self) -> Sequence[BundleRequest]:
        export = self._export()
        if export.present():
            return ()
        env = {
            "ROSEMESH_EMBEDDING_MODELS_DIR": str(self.settings.models_dir),
            "ROSEMESH_EMBEDDING_FAST": str(self.settings.fast).lower(),
        }
        return [BundleRequest(export, ["export", "embedding"], minutes=2, env=env)]

    @property
    def service_names(self) -> Sequence[str]:
        return [SERVICE_NAME]

    def register(self, server: grpc.aio.Server) -> None:
        servicer = EmbeddingServicer(self.settings, self.embedders, self.model.name, self.parity, self.cpu_features)
        embedding_pb2_grpc.add_EmbeddingServiceServicer_to_server(servicer, server)

    async def load(self, progress: StartProgress) -> None:
        settings, model = self.settings, self.model
        self.cpu_features[:] = cpu_features()
        await wait_for_bundle(self._export(), progress.report)
        progress.report(f"loading {MODEL_NAME}")
        encoder = TextEncoder(model.tokenizer_path, model.max_tokens)
        batching = BatchingConfig(
            max_batch_size=settings.max_batch_size,
            max_wait_s=settings.max_wait_ms / 1000,
            max_queue=settings.max_queue,
            max_batch_size_units=settings.max_batch_tokens,
        )
        exact = Embedder(model.name, encoder, build_backend(settings, model), model.dimension, "fp32", batching)
        embedders = {model.name: exact}
        manifest = model.manifest()
        self.parity[model.name] = Parity(
            float(manifest.get("exact_parity", 0.0)),  # type: ignore[arg-type]
            str(manifest.get("parity_reference", "")),
            exact_path(self.cpu_features) if settings.backend != "triton" else "triton",
        )
        if settings.fast:
            backend, precision, cpu_path = build_fast_backend(settings, model, self.cpu_features)
            fast_name = model.name + FAST_SUFFIX
            fast_batching = replace(batching, max_batch_size_units=settings.fast_max_batch_tokens)
            embedders[fast_name] = Embedder(fast_name, encoder, backend, model.dimension, precision, fast_batching, tier="fast")
            self.parity[fast_name] = Parity(0.0, f"{model.name} fp32, {model.parity_sentences_path.name}", cpu_path)
        for embedder in embedders.values():
            await embedder.start()
        if settings.fast:
            progress.report("measuring the fast tier's parity")
            self.parity[fast_name] = await self._fast_parity(exact, embedders[fast_name], self.parity[fast_name])
        self.embedders.update(embedders)
        for name, parity in self.parity.items():
            log.info(
                "tier",
                extra={"model": name, "runtime": embedders[name].backend.runtime, "precision": embedders[name].precision,
                       "cpu_path": parity.cpu_path, "parity_min_cosine": parity.cosine, "against": parity.reference,
                       "cpu_features": self.cpu_features, "plain_cpu_paths": settings.plain_cpu_paths},
            )
        if self.http_api is not None:
            await self.http_api.start()

    async def _fast_parity(self, exact: Embedder, fast: Embedder, parity: Parity) -> Parity:
        texts = json.loads(self.model.parity_sentences_path.read_text())
        exact_vectors, fast_vectors = (await exact.embed(texts)).matrix(), (await fast.embed(texts)).matrix()
        return Parity(round(min_cosine(exact_vectors, fast_vectors), 7), parity.reference, parity.cpu_path)

    async def stop(self) -> None:
        if self.http_api is not None:  # first: its in-flight requests need the embedders
            await self.http_api.stop()
        for embedder in self.embedders.values():
            await embedder.stop()
