"""``rosemesh bench cluster``: three experience replicas over one store, a mixed stream of calls
to all of them, and what a cluster operator watches: staleness, agreement, latency, a free loop."""

from __future__ import annotations

import asyncio
import random
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc
from qdrant_client import QdrantClient
from rich.console import Console
from rich.progress import Progress
from rosemesh.experience.v1 import experience_pb2 as pb

from services.adapters.embedding_service import RemoteEmbedder
from services.experience.backends.qdrant_edge import QdrantEdgeStore
from services.experience.backends.qdrant_server import QdrantServerStore
from services.experience.client import ExperienceClient
from services.experience.core.experience import Experience, experience_id
from services.experience.core.ports import StoredPoint
from services.experience.offline.cluster import Replica
from services.experience.server import ExperienceSettings
from services.offline.datasets import commonsense_qa
from services.supervisor import service_process

TENANT = "cluster"
LARGE = "large"


def _p(values: list[float], q: float) -> float:
    return round(float(np.percentile(values, q)), 2) if values else float("nan")


def _paths(rng: random.Random) -> list[tuple[str, str]]:
    answers = [rng.choice("ABCDE") for _ in range(rng.randint(1, 5))]
    return [("\n".join(f"Step {i + 1}." for i in range(rng.randint(1, 6))), a) for a in answers]


async def _appearance(client: ExperienceClient, question: str, experience: str, acked: float) -> float:
    """Milliseconds from a write's acknowledgement to its first appearance in ``client``'s answers."""
    while True:
        response = await client.orchestrate(question, k=1, strategy=pb.STRATEGY_SIMILARITY_TOPK)
        if response.demonstrations and response.demonstrations[0].experience.id == experience:
            return (time.monotonic() - acked) * 1000
        await asyncio.sleep(0.005)


async def _stream(replicas: list[Replica], operations: int, seed: int, console: Console) -> dict[str, Any]:
    rng = random.Random(seed)
    questions = [q.prompt() for q in commonsense_qa(1200)]
    clients = [ExperienceClient(r.address, TENANT, timeout_s=60) for r in replicas]
    latencies: list[list[float]] = [[] for _ in replicas]
    probes: list[asyncio.Task[float]] = []
    known: list[str] = []
    try:
        for client in clients:
            await client.orchestrate(questions[0], k=2)  # every replica has the tenant resident
        with Progress(console=console, transient=True) as progress:
            task = progress.add_task(f"{operations} mixed calls across {len(replicas)} replicas", total=operations)
            for step in range(operations):
                index = rng.randrange(len(clients))
                client, roll = clients[index], rng.random()
                if roll < 0.5:
                    question = rng.choice(questions[:1000])
                    recorded = await client.record(question, _paths(rng))
                    acked = time.monotonic()
                    known.append(recorded.experience.id)
                    if step % 5 == 0:  # a probe on another replica times this write's arrival
                        other = clients[(index + rng.randrange(1, len(clients))) % len(clients)]
                        probes.append(asyncio.create_task(_appearance(other, question, recorded.experience.id, acked)))
                elif roll < 0.65 and known:
                    await client.delete(known.pop(rng.randrange(len(known))))
                else:
                    began = time.perf_counter()
                    await client.orchestrate(rng.choice(questions[1000:]), k=8)
                    latencies[index].append((time.perf_counter() - began) * 1000)
                progress.advance(task)
        staleness = list(await asyncio.wait_for(asyncio.gather(*probes), 60))
        await asyncio.sleep(2 * replicas[0].settings.staleness_s)
        for replica in replicas:
            assert replica.pool is not None
            await replica.pool.catch_up()
        identical, sublinear_shares = 0, [[] for _ in replicas]
        queries = questions[1000:1100]
        for question in queries:
            exact = [
                [d.experience.id for d in (await c.orchestrate(question, k=8, search_mode=pb.SEARCH_MODE_EXACT)).demonstrations]
                for c in clients
            ]
            identical += all(e == exact[0] for e in exact)
            for i, c in enumerate(clients):
                response = await c.orchestrate(question, k=8, search_mode=pb.SEARCH_MODE_SUBLINEAR)
                if response.search_mode == pb.SEARCH_MODE_SUBLINEAR and exact[i]:
                    chosen = {d.experience.id for d in response.demonstrations}
                    sublinear_shares[i].append(len(chosen & set(exact[i])) / len(exact[i]))
        pool_size = (await clients[0].stats()).experience_count
    finally:
        for client in clients:
            await client.close()
    return {
        "pool_size": pool_size,
        "staleness_p50_ms": _p(staleness, 50),
        "staleness_p99_ms": _p(staleness, 99),
        "staleness_writes_probed": len(staleness),
        "replica_agreement": round(identical / len(queries), 4),
        "sublinear_agreement_with_exact": {
            f"replica_{i}": round(statistics.fmean(s), 4) if s else None for i, s in enumerate(sublinear_shares)
        },
        "orchestrate_p99_ms": {f"replica_{i}": _p(values, 99) for i, values in enumerate(latencies)},
    }


async def _health_during(address: str, busy: asyncio.Task[Any]) -> list[float]:
    latencies = []
    async with grpc.aio.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while not busy.done():
            began = time.perf_counter()
            await stub.Check(health_pb2.HealthCheckRequest(), timeout=10)
            latencies.append((time.perf_counter() - began) * 1000)
            await asyncio.sleep(0.002)
    await busy
    return latencies


async def _records(client: ExperienceClient, count: int, rng: random.Random, tag: str) -> list[float]:
    latencies = []
    for i in range(count):
        began = time.perf_counter()
        await client.record(f"{tag} question {i}: what is {i} plus {rng.randint(0, 99)}?", _paths(rng))
        latencies.append((time.perf_counter() - began) * 1000)
    return latencies


async def _large(embed: RemoteEmbedder, data_dir: Path, size: int, console: Console) -> dict[str, Any]:
    """One replica on the embedded engine with a tenant of ``size``: health checks while its exact
    Orchestrates run, and another tenant's Record p99 idle and while the large one partitions."""
    store = QdrantEdgeStore(data_dir, 384)
    rng = np.random.default_rng(0)
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task(f"storing a tenant of {size:,}", total=size)
        for start in range(0, size, 8192):
            n = min(8192, size - start)
            vectors = rng.standard_normal((n, 384)).astype(np.float32)
            vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
            store.upsert([
                StoredPoint(Experience(uncertainty=float((start + i) % 4) / 3, complexity=float((start + i) % 9 + 1),
                                       reasoning="r", answer="a", path_count=1, majority_count=1,
                                       id=experience_id(LARGE, f"q{start + i}"), tenant=LARGE,
                                       question=f"q{start + i}", create_time=0.0, update_time=0.0), vectors[i])
                for i in range(n)
            ])  # fmt: skip
            progress.advance(task, n)
    # The partition trains once the tenant loads: sublinear from this size, so that it runs at once.
    settings = ExperienceSettings(poison_screen=False, sublinear_threshold=max(1, size // 2), mirror_budget_bytes=1 << 34)
    replica = await Replica(store, embed.embed, settings).start()
    large = ExperienceClient(replica.address, LARGE, timeout_s=600)
    small = ExperienceClient(replica.address, "small", timeout_s=60)
    pyrng = random.Random(1)
    try:
        await small.orchestrate("anything?", k=1)  # resident: its Records update its mirror
        await _records(small, 10, pyrng, "warm-up")
        idle = await _records(small, 60, pyrng, "idle")
        with console.status(f"loading the tenant of {size:,} into the mirror"):
            await large.stats()
        state = replica.pool.tenants[LARGE] if replica.pool else None
        retraining = state is not None and state.partitioning is not None and not state.partitioning.done()
        during = await _records(small, 60, pyrng, "during")
        still = state is not None and state.partitioning is not None and not state.partitioning.done()
        with console.status("waiting for the partition to finish"):
            if state is not None and state.partitioning is not None:
                await state.partitioning

        async def orchestrates() -> list[float]:
            latencies = []
            for i in range(20):
                began = time.perf_counter()
                await large.orchestrate(f"question {i}", k=8, search_mode=pb.SEARCH_MODE_EXACT)
                latencies.append((time.perf_counter() - began) * 1000)
            return latencies

        work = asyncio.create_task(orchestrates())
        health = await _health_during(replica.address, work)
        exact = work.result()
    finally:
        await large.close()
        await small.close()
        await replica.stop()
        store.close()
    return {
        "large_pool_size": size,
        "large_exact_orchestrate_p50_ms": _p(exact, 50),
        "health_p99_ms_during_large_orchestrate": _p(health, 99),
        "health_checks_during_large_orchestrate": len(health),
        "record_p99_ms_idle": _p(idle, 99),
        "record_p99_ms_during_retrain": _p(during, 99),
        "retrain_ran_throughout": bool(retraining and still),
    }


async def _run(operations: int, large_size: int, qdrant_url: str | None, embedding: str, console: Console) -> dict[str, Any]:
    embed = RemoteEmbedder(embedding, 30.0)
    client = QdrantClient(url=qdrant_url, prefer_grpc=True) if qdrant_url else QdrantClient(":memory:")
    store = QdrantServerStore(client, 384, collection=f"rosemesh_bench_cluster_{int(time.time())}")
    settings = ExperienceSettings(storage="qdrant", qdrant_url=qdrant_url or "http://in-process", poison_screen=False)
    replicas = [await Replica(store, embed.embed, settings).start() for _ in range(3)]
    try:
        stream = await _stream(replicas, operations, 0, console)
    finally:
        for replica in replicas:
            await replica.stop()
        if qdrant_url:
            client.delete_collection(store.collection)
    with tempfile.TemporaryDirectory() as root:
        large = await _large(embed, Path(root), large_size, console)
    await embed.close()
    return {
        "benchmark": "cluster",
        "replicas": 3,
        "store": qdrant_url or "in-process QdrantClient(':memory:')",
        "operations": operations,
        "staleness_bound_ms": settings.staleness_s * 1000,
        **stream,
        **large,
    }


def run_benchmark(
    operations: int = 600, large_size: int = 1_000_000, qdrant_url: str | None = None, quiet: bool = False
) -> dict[str, Any]:
    console = Console(stderr=True, quiet=quiet)
    with service_process("embedding", ["--no-fast"]) as embedding:
        return asyncio.run(_run(operations, large_size, qdrant_url, embedding.address, console))
