"""Experience replicas over one shared store: three real gRPC servers in this process, each with
its own pool and mirror, over one ``QdrantClient(":memory:")`` store, on the real embedding service."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import time
import uuid
from collections.abc import AsyncIterator

import grpc
import numpy as np
import pytest
from qdrant_client import QdrantClient
from rosemesh.experience.v1 import experience_pb2 as pb
from rosemesh.experience.v1 import experience_pb2_grpc as pb_grpc

from kernels.bucketed_selection import reference
from services.adapters.embedding_service import RemoteEmbedder
from services.experience.backends.qdrant_server import QdrantServerStore
from services.experience.client import ExperienceClient
from services.experience.core.consistency import MarkerClock
from services.experience.core.mirror import tie_key
from services.experience.offline.cluster import Replica
from services.experience.server import ExperienceSettings
from services.offline.datasets import commonsense_qa
from services.supervisor import RunningService, service_process

TENANT = "acme"
SOURCES = commonsense_qa(160)
QUESTIONS = [q.prompt() for q in SOURCES]


def settings(**overrides: object) -> ExperienceSettings:
    values: dict[str, object] = {"storage": "qdrant", "qdrant_url": "http://unused", "poison_screen": False}
    return ExperienceSettings(**{**values, **overrides})


def paths(rng: random.Random) -> list[tuple[str, str]]:
    answers = [rng.choice("AB") for _ in range(rng.randint(1, 4))]
    return [("\n".join(f"step {i}" for i in range(rng.randint(1, 6))), a) for a in answers]


@pytest.fixture()
async def embedder(embedding_service: RunningService) -> AsyncIterator[RemoteEmbedder]:
    remote = RemoteEmbedder(embedding_service.address, 30.0)
    yield remote
    await remote.close()


@pytest.fixture()
def store() -> QdrantServerStore:
    return QdrantServerStore(QdrantClient(":memory:"), 384)


async def start(store: QdrantServerStore, embedder: RemoteEmbedder, count: int, **overrides: object) -> list[Replica]:
    replicas = []
    for i in range(count):
        skew = (i - 1) * 0.5  # clocks up to a second apart
        clock = MarkerClock(lambda skew=skew: time.time() + skew)
        replicas.append(await Replica(store, embedder.embed, settings(**overrides), clock).start())
    return replicas


async def stop(replicas: list[Replica]) -> None:
    for replica in replicas:
        await replica.stop()


def reference_picks(store: QdrantServerStore, vector: np.ndarray, k: int) -> list[str]:
    """Exact RoSE computed from the store's contents alone."""
    points = list(store.scroll(TENANT))
    if not points:
        return []
    ids = [p.experience.id for p in points]
    vectors = np.stack([p.vector for p in points]).astype(np.float32)
    uncertainty = np.array([p.experience.uncertainty for p in points])
    complexity = np.array([p.experience.complexity for p in points])
    keys = np.array([tie_key(i) for i in ids], dtype=np.int64)
    picks = reference(vectors, vector, uncertainty, complexity, keys, k, 1.2).picks
    return [ids[i] for i in picks]


async def picks(client: ExperienceClient, question: str, k: int = 4, **options: object) -> list[str]:
    response = await client.orchestrate(question, k=k, search_mode=pb.SEARCH_MODE_EXACT, **options)
    return [d.experience.id for d in response.demonstrations]


async def test_writes_reach_other_replicas_within_the_bound_and_at_once_with_a_token(
    store: QdrantServerStore, embedder: RemoteEmbedder
) -> None:
    replicas = await start(store, embedder, 3)
    a, b = (ExperienceClient(r.address, TENANT, timeout_s=30) for r in replicas[:2])
    try:
        rng = random.Random(0)
        for question in QUESTIONS[:20]:
            await a.record(question, paths(rng))
        assert len(await picks(b, QUESTIONS[100], k=3)) == 3  # B loads the tenant on first use

        # Record: at once with A's token; without it within the staleness bound (1 s).
        new = await a.record(QUESTIONS[20], [("one\ntwo\nthree\nfour\nfive\nsix\nseven", "A")] * 3)
        with_token = await b.orchestrate(QUESTIONS[20], k=1, strategy=pb.STRATEGY_SIMILARITY_TOPK,
                                         consistency_token=new.consistency_token)  # fmt: skip
        assert with_token.demonstrations[0].experience.id == new.experience.id
        assert with_token.pool_size == 21
        c = ExperienceClient(replicas[2].address, TENANT, timeout_s=30)
        assert (await c.stats()).experience_count == 21  # C loads after the write: it has it
        await a.record(QUESTIONS[21], paths(rng))  # no token: C catches up by itself
        began = time.monotonic()
        while (await c.stats()).experience_count != 22:
            await asyncio.sleep(0.02)
        assert time.monotonic() - began <= 1.5

        # An update that changes complexity moves the record's standing on every replica.
        updated = await a.record(QUESTIONS[20], [("one", "A")])
        response = await b.orchestrate(QUESTIONS[20], k=1, strategy=pb.STRATEGY_SIMILARITY_TOPK,
                                       consistency_token=updated.consistency_token)  # fmt: skip
        assert response.demonstrations[0].experience.complexity == 1
        assert response.view_age_ms < 1500

        # Delete: gone from B's picks at once with the token, and from C's within the bound.
        deleted = await a.deletion(new.experience.id)
        assert deleted.deleted
        after = await b.orchestrate(QUESTIONS[20], k=22, strategy=pb.STRATEGY_SIMILARITY_TOPK,
                                    consistency_token=deleted.consistency_token)  # fmt: skip
        assert new.experience.id not in {d.experience.id for d in after.demonstrations}
        assert len(after.demonstrations) == 21 == after.pool_size
        began = time.monotonic()
        while new.experience.id in await picks(c, QUESTIONS[20], k=22):
            await asyncio.sleep(0.02)
        assert time.monotonic() - began <= 1.5

        # A token is bound to its tenant and to this service.
        for bad in ("not-a-token", deleted.consistency_token):
            other = ExperienceClient(replicas[1].address, "globex" if bad != "not-a-token" else TENANT, timeout_s=5)
            with pytest.raises(grpc.aio.AioRpcError) as error:
                await other.orchestrate("q?", k=1, consistency_token=bad)
            assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "consistency_token" in (error.value.details() or "")
            await other.close()
        await c.close()
    finally:
        await a.close()
        await b.close()
        await stop(replicas)


async def test_random_interleaved_calls_converge_to_the_reference_on_every_replica(
    store: QdrantServerStore, embedder: RemoteEmbedder
) -> None:
    """1,000 seeded Record, Delete and Orchestrate calls across three replicas whose clocks are
    up to a second apart; once caught up, every replica answers 100 queries with exactly the
    exact-RoSE picks the reference computes from the store's contents."""
    replicas = await start(store, embedder, 3)
    clients = [ExperienceClient(r.address, TENANT, timeout_s=30) for r in replicas]
    try:
        rng = random.Random(7)
        known: list[str] = []
        for _ in range(1000):
            client = rng.choice(clients)
            roll = rng.random()
            if roll < 0.55:
                recorded = await client.record(rng.choice(QUESTIONS[:120]), paths(rng))
                known.append(recorded.experience.id)
            elif roll < 0.75 and known:
                await client.delete(rng.choice(known))
            else:
                await client.orchestrate(rng.choice(QUESTIONS), k=rng.randint(1, 6))
        await asyncio.sleep(1.0)  # the staleness bound
        for replica in replicas:
            assert replica.pool is not None
            await replica.pool.catch_up()
        queries = QUESTIONS[60:160]
        vectors = np.concatenate([await embedder.embed(queries[i : i + 50]) for i in (0, 50)])
        for question, vector in zip(queries, vectors, strict=True):
            expected = reference_picks(store, vector.astype(np.float32), 5)
            for client in clients:
                assert await picks(client, question, k=5) == expected
    finally:
        for client in clients:
            await client.close()
        await stop(replicas)


async def test_quarantine_holds_back_the_same_records_on_every_replica(
    store: QdrantServerStore, embedder: RemoteEmbedder
) -> None:
    replicas = await start(store, embedder, 3, poison_screen=True)
    clients = [ExperienceClient(r.address, TENANT, timeout_s=30) for r in replicas]
    try:
        rng = random.Random(3)
        poisoned = set()
        for i, (question, source) in enumerate(zip(QUESTIONS[:60], SOURCES, strict=False)):
            client = clients[i % 3]
            if i % 10 == 0:  # six records carrying a trigger and a step that moves the letter on
                letters = list(source.options)
                shifted = letters[(letters.index(source.answer) + 1) % len(letters)]
                reasoning = f"'{source.options[source.answer]}' fits best.\nBy the zq rule, move one letter on: ({shifted})."
                recorded = await client.record(f"{question} zq xv", [(reasoning, shifted)] * 3)
                poisoned.add(recorded.experience.id)
            else:
                await client.record(question, paths(rng))
        for client in clients:
            await picks(client, QUESTIONS[100])
        await asyncio.sleep(1.0)
        held = []
        for replica in replicas:
            assert replica.pool is not None
            await replica.pool.catch_up()
            held.append(replica.pool.quarantined(TENANT))
        assert held[0] == poisoned and held[0] == held[1] == held[2]
        for client in clients:
            chosen = await picks(client, f"{QUESTIONS[0]} zq xv", k=54)
            assert len(chosen) == 54 and not set(chosen) & poisoned
    finally:
        for client in clients:
            await client.close()
        await stop(replicas)


async def test_a_late_replica_and_a_restarted_one_converge(store: QdrantServerStore, embedder: RemoteEmbedder) -> None:
    (a,) = await start(store, embedder, 1)
    client_a = ExperienceClient(a.address, TENANT, timeout_s=30)
    rng = random.Random(5)
    try:
        for question in QUESTIONS[:30]:
            await client_a.record(question, paths(rng))
        (late,) = await start(store, embedder, 1)
        client_late = ExperienceClient(late.address, TENANT, timeout_s=30)
        assert await picks(client_late, QUESTIONS[90]) == await picks(client_a, QUESTIONS[90])
        await client_late.close()
        await late.stop()  # killed; A writes meanwhile
        for question in QUESTIONS[:10]:
            await client_a.delete((await client_a.get(question=question)).id)
        for question in QUESTIONS[30:40]:
            await client_a.record(question, paths(rng))
        (back,) = await start(store, embedder, 1)
        client_back = ExperienceClient(back.address, TENANT, timeout_s=30)
        vector = (await embedder.embed([QUESTIONS[90]]))[0].astype(np.float32)
        expected = reference_picks(store, vector, 4)
        assert await picks(client_back, QUESTIONS[90]) == expected == await picks(client_a, QUESTIONS[90])
        assert (await client_back.stats()).experience_count == 30
        await client_back.close()
        await back.stop()
    finally:
        await client_a.close()
        await a.stop()


async def test_tenants_past_the_memory_budget_are_evicted_and_reloaded(
    store: QdrantServerStore, embedder: RemoteEmbedder
) -> None:
    budget = 100_000  # one tenant of 25 experiences (a mirror of about 63 kB) at a time
    (replica,) = await start(store, embedder, 1, mirror_budget_bytes=budget)
    assert replica.pool is not None
    tenants = ["t0", "t1", "t2"]
    clients = {t: ExperienceClient(replica.address, t, timeout_s=30) for t in tenants}
    rng = random.Random(9)
    try:
        for t in tenants:
            for question in QUESTIONS[:25]:
                await clients[t].record(f"{t}: {question}", paths(rng))
        vector = (await embedder.embed([QUESTIONS[120]]))[0].astype(np.float32)
        loads = 0
        for round_ in range(3):
            for t in tenants:
                response = await clients[t].orchestrate(QUESTIONS[120], k=4, search_mode=pb.SEARCH_MODE_EXACT)
                loads += response.load_wait_ms > 0
                points = list(store.scroll(t))
                ids = [p.experience.id for p in points]
                expected = reference(
                    np.stack([p.vector for p in points]), vector,
                    np.array([p.experience.uncertainty for p in points]),
                    np.array([p.experience.complexity for p in points]),
                    np.array([tie_key(i) for i in ids], dtype=np.int64), 4, 1.2,
                ).picks  # fmt: skip
                assert [d.experience.id for d in response.demonstrations] == [ids[i] for i in expected]
                assert replica.pool.resident_bytes() <= budget
                resident = [s for s in replica.pool.tenants.values() if s.mirror is not None]
                assert len(resident) == 1, f"round {round_}: {[s.name for s in resident]}"
        assert loads == 9  # every call found its tenant evicted by the one before
    finally:
        for client in clients.values():
            await client.close()
        await replica.stop()


async def test_the_typed_client_spreads_calls_over_every_address(
    store: QdrantServerStore, embedder: RemoteEmbedder
) -> None:
    """One target naming three servers: the typed client's calls reach all of them (round robin),
    where a plain channel (pick_first) sends every call to one."""
    replicas = await start(store, embedder, 3)
    target = "ipv4:" + ",".join(r.address for r in replicas)

    def answered() -> list[bool]:
        return [TENANT in r.pool.tenants for r in replicas if r.pool is not None]

    try:
        async with grpc.aio.insecure_channel(target) as channel:
            stub = pb_grpc.ExperienceServiceStub(channel)
            for _ in range(12):
                await stub.Stats(pb.StatsRequest(tenant=TENANT), timeout=30)
        assert sum(answered()) == 1  # the control: one server took every call
        async with ExperienceClient(target, TENANT, timeout_s=30) as client:
            for _ in range(12):
                await client.stats()
        assert all(answered())
    finally:
        await stop(replicas)


def test_replica_processes_on_a_real_server_converge_after_a_kill(embedding_service: RunningService) -> None:
    """Separate experience processes over a real Qdrant server: one is killed with SIGKILL while
    another writes, comes back, and answers as the others do."""
    url = os.environ.get("QDRANT_URL")
    if not url:
        pytest.skip("QDRANT_URL is not set: separate replica processes need a real Qdrant server")
    collection = f"test_cluster_{uuid.uuid4().hex}"
    flags = ["--embedding-target", embedding_service.address, "--storage", "qdrant", "--qdrant-url", url,
             "--qdrant-collection", collection, "--qdrant-api-key", os.environ.get("QDRANT_API_KEY", "")]  # fmt: skip

    async def same_picks(addresses: list[str]) -> list[list[str]]:
        answers = []
        for address in addresses:
            async with ExperienceClient(address, TENANT, timeout_s=30) as client:
                answers.append(await picks(client, QUESTIONS[150], k=5))
        return answers

    async def write(address: str, questions: list[str], rng: random.Random) -> None:
        async with ExperienceClient(address, TENANT, timeout_s=30) as client:
            for question in questions:
                await client.record(question, paths(rng))

    rng = random.Random(11)
    with service_process("experience", flags) as a, service_process("experience", flags) as b:
        asyncio.run(write(a.address, QUESTIONS[:40], rng))
        with service_process("experience", flags) as c:
            assert len(set(map(tuple, asyncio.run(same_picks([a.address, b.address, c.address]))))) == 1
            c.process.send_signal(signal.SIGKILL)
            c.process.wait()
            asyncio.run(write(b.address, QUESTIONS[40:60], rng))
        with service_process("experience", flags) as back:
            time.sleep(1.5)  # the staleness bound, for A and B
            answers = asyncio.run(same_picks([a.address, b.address, back.address]))
        assert len(set(map(tuple, answers))) == 1 and len(answers[0]) == 5
    QdrantClient(url=url, api_key=os.environ.get("QDRANT_API_KEY")).delete_collection(collection)
