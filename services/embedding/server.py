"""The embedding service's face: validates requests, maps protobuf to the core and back."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import grpc
from pydantic import Field
from pydantic_settings import SettingsConfigDict
from rosemesh.embedding.v1 import embedding_pb2, embedding_pb2_grpc

from services.common.batching import BatchingConfig
from services.common.bundles import Bundle, BundleRequest, wait_for_bundle
from services.common.tokens import TextEncoder
from services.embedding.bundle import INT8_SUFFIX, MODEL_NAME, exported_model
from services.embedding.core.embedder import Embedder
from services.embedding.core.ports import EmbeddingBackend
from services.embedding.validation import select_embedder
from services.runtime.config import ServiceSettings
from services.runtime.server import Service, StartProgress

SERVICE_NAME = embedding_pb2.DESCRIPTOR.services_by_name["EmbeddingService"].full_name


class EmbeddingSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="ROSEMESH_EMBEDDING_")

    port: int = Field(50051, ge=0, le=65535)
    metrics_port: int = Field(9464, ge=0, le=65535)
    backend: Literal["onnx", "triton"] = Field("onnx", description="runtime for the fp32 model")
    triton_url: str = Field("127.0.0.1:8001", description="Triton gRPC address, for --backend triton")
    triton_model: str = Field("embedding_minilm", description="model name in the Triton repository")
    int8: bool = Field(True, description="also serve the int8 dynamic-quantized model (ONNX Runtime)")
    max_batch_size: int = Field(32, ge=1, le=1024, description="texts per inference batch")
    max_wait_ms: float = Field(
        0.0, ge=0, le=1000, description="how long a lone request waits for company (requests that come during a batch share the next)"
    )
    max_queue: int = Field(4096, ge=1, description="texts waiting at most; beyond, RESOURCE_EXHAUSTED")
    max_texts: int = Field(512, ge=1, description="texts per request at most")
    max_text_bytes: int = Field(32 * 1024, ge=1, description="UTF-8 bytes per text at most")
    intra_op_threads: int = Field(0, ge=0, description="ONNX Runtime threads (0: one per core)")


def build_backend(settings: EmbeddingSettings, onnx_path: Path) -> EmbeddingBackend:
    if settings.backend == "triton":
        from services.embedding.backends.triton import TritonBackend

        return TritonBackend(settings.triton_url, settings.triton_model)
    from services.embedding.backends.onnx import OnnxRuntimeBackend

    return OnnxRuntimeBackend(onnx_path, intra_op_threads=settings.intra_op_threads)


class EmbeddingServicer(embedding_pb2_grpc.EmbeddingServiceServicer):
    def __init__(self, settings: EmbeddingSettings, embedders: dict[str, Embedder], default: str) -> None:
        self.settings = settings
        self.embedders = embedders
        self.default = default

    def _validate(self, request: embedding_pb2.EmbedRequest) -> Embedder:
        return select_embedder(self.settings, self.embedders, self.default, list(request.texts), request.model)

    async def Embed(
        self, request: embedding_pb2.EmbedRequest, context: grpc.aio.ServicerContext
    ) -> embedding_pb2.EmbedResponse:
        embedder = self._validate(request)
        result = await embedder.embed(list(request.texts))
        embedded = result.texts
        return embedding_pb2.EmbedResponse(
            model=embedder.name,
            dimension=embedder.dimension,
            embeddings=[
                embedding_pb2.Embedding(values=e.vector.tolist(), truncated=e.truncated, token_count=e.token_count)
                for e in embedded
            ],
        )

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
                )
                for e in self.embedders.values()
            ]
        )


class EmbeddingService(Service):
    name = "embedding"
    settings_class = EmbeddingSettings
    settings: EmbeddingSettings

    def __init__(self, settings: EmbeddingSettings) -> None:
        super().__init__(settings)
        self.model = exported_model(settings.models_dir)
        self.embedders: dict[str, Embedder] = {}

    def _export(self) -> Bundle:
        return Bundle(
            f"the {MODEL_NAME} export",
            self.model.directory,
            lambda: not self.model.missing(int8=self.settings.int8),
            hint="run `rosemesh export embedding`",
        )

    def bundles(self) -> Sequence[BundleRequest]:
        export = self._export()
        if export.present():
            return ()
        env = {
            "ROSEMESH_EMBEDDING_MODELS_DIR": str(self.settings.models_dir),
            "ROSEMESH_EMBEDDING_INT8": str(self.settings.int8).lower(),
        }
        return [BundleRequest(export, ["export", "embedding"], minutes=1, env=env)]

    @property
    def service_names(self) -> Sequence[str]:
        return [SERVICE_NAME]

    def register(self, server: grpc.aio.Server) -> None:
        servicer = EmbeddingServicer(self.settings, self.embedders, default=self.model.name)
        embedding_pb2_grpc.add_EmbeddingServiceServicer_to_server(servicer, server)

    async def load(self, progress: StartProgress) -> None:
        settings, model = self.settings, self.model
        await wait_for_bundle(self._export(), progress.report)
        progress.report(f"loading {MODEL_NAME}")
        encoder = TextEncoder(model.tokenizer_path, model.max_tokens)
        batching = BatchingConfig(
            max_batch_size=settings.max_batch_size,
            max_wait_s=settings.max_wait_ms / 1000,
            max_queue=settings.max_queue,
        )
        embedders = {
            model.name: Embedder(
                model.name, encoder, build_backend(settings, model.fp32_path), model.dimension, "fp32", batching
            )
        }
        if settings.int8:
            from services.embedding.backends.onnx import OnnxRuntimeBackend

            int8_name = model.name + INT8_SUFFIX
            int8_backend = OnnxRuntimeBackend(model.int8_path, intra_op_threads=settings.intra_op_threads)
            embedders[int8_name] = Embedder(int8_name, encoder, int8_backend, model.dimension, "int8", batching)
        for embedder in embedders.values():
            await embedder.start()
        self.embedders.update(embedders)

    async def stop(self) -> None:
        for embedder in self.embedders.values():
            await embedder.stop()
