"""qdrant-edge durability and background indexing, against real files and real processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from services.experience.backends.qdrant_edge import QdrantEdgeStore
from services.experience.core.experience import Experience, experience_id
from services.experience.core.ports import StoredPoint

DIM = 384
TENANT = "acme"
ROOT = Path(__file__).resolve().parents[2]


def make_point(rng: np.random.Generator, i: int, tenant: str = TENANT) -> StoredPoint:
    vector = rng.normal(size=DIM).astype(np.float32)
    question = f"question {i}"
    experience = Experience(
        id=experience_id(tenant, question),
        tenant=tenant,
        question=question,
        reasoning="a\nb",
        answer=str(i),
        uncertainty=float(i % 4) / 4,
        complexity=float(i % 5),
        path_count=5,
        majority_count=3,
        create_time=float(i),
        update_time=float(i),
    )
    return StoredPoint(experience, vector / np.linalg.norm(vector))


def stored_state(store: QdrantEdgeStore) -> dict[str, Experience]:
    return {p.experience.id: p.experience for p in store.scroll()}


def test_reopening_after_close_keeps_everything(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    points = [make_point(rng, i) for i in range(200)]
    store = QdrantEdgeStore(tmp_path, DIM)
    store.upsert(points)
    store.delete(TENANT, points[0].experience.id)
    store.close()

    reopened = QdrantEdgeStore(tmp_path, DIM)
    try:
        assert stored_state(reopened) == {p.experience.id: p.experience for p in points[1:]}
        hit = reopened.search(TENANT, points[5].vector, 1)[0]
        assert hit.experience == points[5].experience and hit.score == pytest.approx(1.0, abs=1e-5)
    finally:
        reopened.close()


CHILD = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    import numpy as np
    from tests.experience.test_edge_durability import DIM, make_point
    from services.experience.backends.qdrant_edge import QdrantEdgeStore

    store = QdrantEdgeStore(Path(sys.argv[1]), DIM)
    rng = np.random.default_rng(2)
    i = 0
    while True:
        point = make_point(rng, i)
        store.upsert([point])
        print(point.experience.id, flush=True)
        i += 1
    """
)


def test_every_acknowledged_upsert_survives_kill_9(tmp_path: Path) -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(tmp_path)], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    assert child.stdout is not None
    acknowledged = [child.stdout.readline().strip() for _ in range(300)]
    os.kill(child.pid, signal.SIGKILL)
    child.wait(timeout=30)
    acknowledged += child.stdout.read().split()  # printed after an acknowledged upsert, before the kill
    assert child.returncode == -signal.SIGKILL

    store = QdrantEdgeStore(tmp_path, DIM)
    try:
        assert set(store.get_many(TENANT, acknowledged)) == set(acknowledged)
    finally:
        store.close()


def test_hnsw_is_built_in_the_background_without_losing_writes(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    points = [make_point(rng, i) for i in range(400)]
    expected = {p.experience.id: p.experience for p in points}
    store = QdrantEdgeStore(tmp_path, DIM, hnsw_threshold=300)
    try:
        store.upsert(points)
        # Reads and writes go on while the build runs; the writes land in the index's delta.
        deadline, writes = time.monotonic() + 120, 0
        while store.indexed_count(TENANT) == 0:
            assert time.monotonic() < deadline, "no HNSW index within 120 s"
            assert store.search(TENANT, points[7].vector, 1)[0].experience.id == points[7].experience.id
            if writes < 100:
                new = make_point(rng, 1000 + writes)
                changed = replace(points[writes].experience, answer="changed", update_time=1e9 + writes)
                store.upsert([new, StoredPoint(changed, points[writes].vector)])
                expected[new.experience.id], expected[changed.id] = new.experience, changed
                if writes % 10 == 0:
                    gone = points[200 + writes].experience.id
                    assert store.delete(TENANT, gone)
                    del expected[gone]
                writes += 1
            time.sleep(0.005)

        assert stored_state(store) == expected
        assert 0 < store.indexed_count(TENANT) <= store.count(TENANT) == len(expected)
        # The builder thread removes the export and the retired shard just after the switch.
        while sorted(p.name for p in tmp_path.iterdir()) != ["CURRENT", "shard-000001"]:
            assert time.monotonic() < deadline, sorted(p.name for p in tmp_path.iterdir())
            time.sleep(0.01)
        # A point written after the build is outside the index; replacing an indexed one moves it out.
        indexed = store.indexed_count(TENANT)
        store.upsert([make_point(rng, 5000)])
        assert store.indexed_count(TENANT) == indexed
        last = points[-1]
        store.upsert([StoredPoint(replace(last.experience, answer="later"), last.vector)])
        assert store.indexed_count(TENANT) == indexed - 1
        assert store.indexed_count("globex") == 0
        state = stored_state(store)
    finally:
        store.close()

    reopened = QdrantEdgeStore(tmp_path, DIM, hnsw_threshold=300)
    try:
        assert stored_state(reopened) == state
        assert reopened.indexed_count(TENANT) == indexed - 1
    finally:
        reopened.close()


def test_closing_during_a_build_cancels_it_cleanly(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    points = [make_point(rng, i) for i in range(2000)]
    store = QdrantEdgeStore(tmp_path, DIM, hnsw_threshold=300)
    store.upsert(points)  # starts a build
    store.close()
    assert not builders_of(tmp_path)

    reopened = QdrantEdgeStore(tmp_path, DIM, hnsw_threshold=10**9)
    try:
        assert reopened.count(TENANT) == 2000
        assert not [p for p in tmp_path.iterdir() if p.name.startswith("build-")]
    finally:
        reopened.close()


SERVING_PROCESS = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    import numpy as np
    from tests.experience.test_edge_durability import DIM, make_point
    from services.experience.backends.qdrant_edge import QdrantEdgeStore

    store = QdrantEdgeStore(Path(sys.argv[1]), DIM, hnsw_threshold=1000)
    rng = np.random.default_rng(6)
    store.upsert([make_point(rng, i) for i in range(10_000)])  # starts a build
    print("written", flush=True)
    time.sleep(600)
    """
)


def builders_of(data_dir: Path) -> list[int]:
    """Pids of HNSW builder processes working on ``data_dir``."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"services.experience.backends.qdrant_edge" in argv and any(
            arg.startswith(bytes(data_dir)) for arg in argv
        ):
            found.append(int(entry.name))
    return found


@pytest.mark.skipif(sys.platform != "linux", reason="the builder dies with its parent through prctl")
def test_kill_9_during_a_build_leaves_no_builder_and_a_whole_store(tmp_path: Path) -> None:
    serving = subprocess.Popen(
        [sys.executable, "-c", SERVING_PROCESS, str(tmp_path)], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    assert serving.stdout is not None and serving.stdout.readline().strip() == "written"
    deadline = time.monotonic() + 60
    while not builders_of(tmp_path):
        assert time.monotonic() < deadline, "no builder process started"
        time.sleep(0.02)
    os.kill(serving.pid, signal.SIGKILL)
    serving.wait(timeout=30)
    while builders_of(tmp_path):
        assert time.monotonic() < deadline, "the builder outlived the serving process"
        time.sleep(0.02)

    store = QdrantEdgeStore(tmp_path, DIM, hnsw_threshold=10**9)
    try:
        assert store.count(TENANT) == 10_000
        assert sorted(p.name for p in tmp_path.iterdir()) == ["CURRENT", "shard-000000"]
    finally:
        store.close()


@pytest.mark.slow
def test_a_large_build_does_not_stall_the_serving_process(tmp_path: Path) -> None:
    """In-process optimize() would hold the GIL for seconds here (20k points)."""
    rng = np.random.default_rng(5)
    points = [make_point(rng, i) for i in range(20_000)]
    store = QdrantEdgeStore(tmp_path, DIM, hnsw_threshold=10_000)
    try:
        for start in range(0, len(points), 1000):
            store.upsert(points[start : start + 1000])
        slowest, deadline = 0.0, time.monotonic() + 300
        while store.indexed_count(TENANT) == 0:
            assert time.monotonic() < deadline
            began = time.perf_counter()
            store.search(TENANT, points[0].vector, 10)
            store.upsert([make_point(rng, 100_000 + int(began * 1000) % 1000)])
            slowest = max(slowest, time.perf_counter() - began)
            time.sleep(0.01)
        assert slowest < 1.0
    finally:
        store.close()
