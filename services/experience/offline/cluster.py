"""Experience replicas in one process over one shared store, each a real gRPC server on
127.0.0.1 with its own pool and mirror: what the cluster tests and ``rosemesh bench cluster`` run."""

from __future__ import annotations

from dataclasses import dataclass, field

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from services.experience.core.consistency import MarkerClock
from services.experience.core.defence import BackdoorScreen
from services.experience.core.pool import ExperiencePool
from services.experience.core.ports import Embed, ExperienceStore
from services.experience.server import ExperienceService, ExperienceSettings, pool_settings, screen_settings
from services.runtime.interceptors import ErrorMappingInterceptor


@dataclass
class Replica:
    """One experience replica: start() opens its port and readies its pool; stop() closes both."""

    store: ExperienceStore
    embed: Embed
    settings: ExperienceSettings
    clock: MarkerClock = field(default_factory=MarkerClock)
    embedding_model: str = "all-MiniLM-L6-v2"
    pool: ExperiencePool | None = None
    address: str = ""
    _server: grpc.aio.Server | None = None

    async def start(self) -> Replica:
        screening = screen_settings(self.settings)
        screen = BackdoorScreen(screening) if screening is not None else None
        self.pool = ExperiencePool(self.store, self.embed, pool_settings(self.settings), screen, self.clock)
        service = ExperienceService(self.settings)
        service.pool, service.store, service.embedding_model = self.pool, self.store, self.embedding_model
        server = grpc.aio.server(interceptors=[ErrorMappingInterceptor()])
        service.register(server)
        checks = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(checks, server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        self._server, self.address = server, f"127.0.0.1:{port}"
        await self.pool.start()
        await checks.set("", health_pb2.HealthCheckResponse.SERVING)
        return self

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.stop(None)
        if self.pool is not None:
            await self.pool.close()
