"""The pool keeps its event loop free and its quarantine copy-free, on a pool large enough that a
selection takes tens of milliseconds."""

from __future__ import annotations

import asyncio
import time
import tracemalloc
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from rosemesh.experience.v1 import experience_pb2 as pb

from services.experience.backends.qdrant_edge import QdrantEdgeStore
from services.experience.client import ExperienceClient
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


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory, vectors: np.ndarray) -> Iterator[QdrantEdgeStore]:
    store = QdrantEdgeStore(tmp_path_factory.mktemp("large"), DIM)
    points = [
        StoredPoint(Experience(uncertainty=(i % 4) / 3, complexity=float(i % 9 + 1), reasoning="r", answer="a",
                               path_count=1, majority_count=1, id=experience_id(TENANT, f"q{i}"), tenant=TENANT,
                               question=f"q{i}", create_time=0.0, update_time=0.0), vectors[i])  # fmt: skip
        for i in range(SIZE)
    ]
    for start in range(0, SIZE, 4096):
        store.upsert(points[start : start + 4096])
    yield store
    store.close()


async def embed(texts: list[str]) -> np.ndarray:
    """One fixed query vector: these tests time selection, not embedding."""
    return np.repeat(unit_rows(np.random.default_rng(2), 1), len(texts), axis=0)


@asynccontextmanager
async def replica_over(store: QdrantEdgeStore, **settings: object) -> AsyncIterator[Replica]:
    running = await Replica(store, embed, ExperienceSettings(poison_screen=False, **settings)).start()  # type: ignore[arg-type]
    try:
        yield running
    finally:
        await running.stop()


@pytest.fixture()
async def replica(store: QdrantEdgeStore) -> AsyncIterator[Replica]:
    async with replica_over(store) as running:
        yield running


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
    assert size == 49_500 and len(chosen) == 8 and not {eid for eid, *_ in chosen} & held
    assert copy_peak > 0.5 * pool_bytes  # the control sees a copy
    assert selection_peak < 0.01 * pool_bytes


async def test_past_the_queue_limit_selections_are_refused(store: QdrantEdgeStore) -> None:
    async with replica_over(store, selection_workers=1, selection_queue=0) as replica:
        async with ExperienceClient(replica.address, TENANT, timeout_s=60) as client:
            await client.stats()  # resident
            outcomes = await asyncio.gather(
                *(client.orchestrate("q", k=8, search_mode=pb.SEARCH_MODE_EXACT) for _ in range(6)),
                return_exceptions=True,
            )
    refused = [o for o in outcomes if isinstance(o, grpc.aio.AioRpcError)]
    assert refused and len(refused) < len(outcomes)
    assert all(o.code() == grpc.StatusCode.RESOURCE_EXHAUSTED for o in refused)
    assert "retry with backoff" in (refused[0].details() or "")


async def test_a_tenant_larger_than_the_budget_is_refused_by_name(store: QdrantEdgeStore) -> None:
    async with replica_over(store, mirror_budget_bytes=1 << 20) as replica:
        async with ExperienceClient(replica.address, TENANT, timeout_s=60) as client:
            with pytest.raises(grpc.aio.AioRpcError) as error:
                await client.orchestrate("q", k=8)
    assert error.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "mirror-budget-bytes" in (error.value.details() or "")


async def test_a_partition_retrain_leaves_other_tenants_writes_alone(store: QdrantEdgeStore) -> None:
    """Another tenant's Record p99 while the large one partitions stays within 50 ms of idle."""
    async with replica_over(store, sublinear_threshold=SIZE // 2) as replica:
        assert replica.pool is not None
        large = ExperienceClient(replica.address, TENANT, timeout_s=120)
        small = ExperienceClient(replica.address, "small", timeout_s=60)
        try:
            await small.stats()  # resident: its Records update its mirror

            async def records(tag: str, count: int = 40) -> list[float]:
                latencies = []
                for i in range(count):
                    began = time.perf_counter()
                    await small.record(f"{tag} question {i}?", [("step\nstep", "A")])
                    latencies.append((time.perf_counter() - began) * 1000)
                return latencies

            await records("warm-up", 5)
            idle = await records("idle")
            await large.stats()  # loads the large tenant; its partition starts training
            training = replica.pool.tenants[TENANT].partitioning
            assert training is not None and not training.done()
            during = await records("during")
            assert not training.done(), "the partition finished before the measurement did"
            await training
        finally:
            await large.close()
            await small.close()
    idle_p99, during_p99 = float(np.percentile(idle, 99)), float(np.percentile(during, 99))
    print(f"small tenant's Record p99: {idle_p99:.1f} ms idle, {during_p99:.1f} ms during the retrain")
    assert during_p99 <= idle_p99 + 50
