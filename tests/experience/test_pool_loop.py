"""The pool keeps its event loop free and its quarantine copy-free, on a pool large enough that a
selection takes tens of milliseconds."""

from __future__ import annotations

import asyncio
import time
import tracemalloc
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.experience.backends.qdrant_edge import QdrantEdgeStore
from services.experience.core import pool as pool_module
from services.experience.core.experience import Experience, experience_id
from services.experience.core.mirror import TenantMirror
from services.experience.core.pool import OrchestrateQuery
from services.experience.core.ports import StoredPoint
from services.experience.offline.cluster import Replica
from services.experience.server import ExperienceSettings

TENANT = "big"
SIZE, DIM = 200_000, 384


def unit_rows(rng: np.random.Generator, n: int) -> np.ndarray:
    rows = rng.standard_normal((n, DIM)).astype(np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def large_mirror(n: int, seed: int = 0) -> TenantMirror:
    rng = np.random.default_rng(seed)
    mirror = TenantMirror(DIM, capacity=n)
    vectors = unit_rows(rng, n)
    for i in range(n):
        mirror.upsert(experience_id(TENANT, f"q{i}"), vectors[i], float(rng.integers(0, 4)) / 3, float(rng.integers(1, 9)))
    mirror.catch_up()
    return mirror


@pytest.fixture(scope="module")
def vectors() -> np.ndarray:
    return unit_rows(np.random.default_rng(1), SIZE)


@pytest.fixture()
async def replica(tmp_path: Path, vectors: np.ndarray) -> AsyncIterator[Replica]:
    store = QdrantEdgeStore(tmp_path, DIM)
    points = [
        StoredPoint(Experience(uncertainty=(i % 4) / 3, complexity=float(i % 9 + 1), reasoning="r", answer="a",
                               path_count=1, majority_count=1, id=experience_id(TENANT, f"q{i}"), tenant=TENANT,
                               question=f"q{i}", create_time=0.0, update_time=0.0), vectors[i])  # fmt: skip
        for i in range(SIZE)
    ]
    for start in range(0, SIZE, 4096):
        store.upsert(points[start : start + 4096])
    query_vectors = unit_rows(np.random.default_rng(2), 1)

    async def embed(texts: list[str]) -> np.ndarray:
        return np.repeat(query_vectors, len(texts), axis=0)

    running = await Replica(store, embed, ExperienceSettings(poison_screen=False)).start()
    yield running
    await running.stop()
    store.close()


async def health_p99_ms(address: str, busy: asyncio.Task[None], at_least: int) -> float:
    """Health checks, one at a time, for as long as ``busy`` runs (``at_least`` of them)."""
    latencies = []
    async with grpc.aio.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        await stub.Check(health_pb2.HealthCheckRequest())
        while not busy.done():
            began = time.perf_counter()
            await stub.Check(health_pb2.HealthCheckRequest(), timeout=5)
            latencies.append((time.perf_counter() - began) * 1000)
            await asyncio.sleep(0.002)
    await busy
    assert len(latencies) >= at_least
    return float(np.percentile(latencies, 99))


async def test_health_checks_stay_fast_while_large_selections_run(replica: Replica) -> None:
    pool = replica.pool
    assert pool is not None
    query = OrchestrateQuery(TENANT, "anything", k=8)
    await pool.orchestrate(query)  # loads the tenant
    vector = (await pool.embed(["anything"]))[0]
    state = pool.tenants[TENANT]
    assert state.mirror is not None and state.mirror.size == SIZE
    view = state.mirror.view()
    began = time.perf_counter()
    pool_module._select_exact(view, vector, query)
    selection_ms = (time.perf_counter() - began) * 1000

    async def in_workers() -> None:
        for _ in range(20):
            await pool.orchestrate(query)

    async def on_the_loop() -> None:  # the control: what selection on the event loop did
        for _ in range(20):
            pool_module._select_exact(view, vector, query)
            await asyncio.sleep(0)

    served = await health_p99_ms(replica.address, asyncio.create_task(in_workers()), at_least=20)
    blocked = await health_p99_ms(replica.address, asyncio.create_task(on_the_loop()), at_least=1)
    print(f"selection {selection_ms:.1f} ms; health p99 {served:.1f} ms in workers, {blocked:.1f} ms on the loop")
    assert blocked > 20, "the control must block the loop, or this test proves nothing"
    assert served < 20


def test_quarantined_rows_cost_no_copy() -> None:
    """With 1% of rows quarantined, an exact RoSE allocates nothing proportional to the pool
    (a copy of the pool less those rows, the old way, is the control)."""
    mirror = large_mirror(50_000)
    held = set(mirror.ids[::100])
    mirror.set_excluded(held)
    view = mirror.view()
    assert view.excluded_count == len(held) == 500
    vector = mirror.vectors[7].copy()
    query = OrchestrateQuery(TENANT, "q", k=8)
    pool_module._select_exact(view, vector, query)  # compiled and warm
    pool_bytes = view.vectors.nbytes + view.compact.codes.nbytes  # type: ignore[union-attr]

    tracemalloc.start()
    try:
        chosen, size = pool_module._select_exact(view, vector, query)
        _, selection_peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        view.without(held)
        _, copy_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert size == 49_500 and len(chosen) == 8 and not {eid for eid, _, _ in chosen} & held
    assert copy_peak > 0.5 * pool_bytes  # the control sees a copy
    assert selection_peak < 0.01 * pool_bytes
