"""qdrant-edge durability, against real files and real processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np

from services.experience.backends.qdrant_edge import QdrantEdgeStore
from services.experience.core.experience import Experience, experience_id
from services.experience.core.ports import StoredPoint, Version

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
    return StoredPoint(experience, vector / np.linalg.norm(vector), marker=1_000 + i)


def stored_state(store: QdrantEdgeStore) -> dict[str, tuple[Experience, int, np.ndarray]]:
    return {p.experience.id: (p.experience, p.marker, p.vector) for p in store.scroll()}


def test_reopening_after_close_keeps_everything(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    points = [make_point(rng, i) for i in range(200)]
    store = QdrantEdgeStore(tmp_path, DIM)
    store.upsert(points)
    assert store.delete(TENANT, points[0].experience.id, 5_000)
    store.close()

    reopened = QdrantEdgeStore(tmp_path, DIM)
    try:
        state = stored_state(reopened)
        assert set(state) == {p.experience.id for p in points[1:]}
        for point in points[1:]:
            experience, marker, vector = state[point.experience.id]
            assert (experience, marker) == (point.experience, point.marker)
            np.testing.assert_allclose(vector, point.vector, atol=1e-6)
        ids = [p.experience.id for p in points[:3]]
        assert reopened.versions(TENANT, ids) == {
            p.experience.id: Version(p.marker, p.experience) for p in points[1:3]
        }
        assert reopened.count(TENANT) == 199
    finally:
        reopened.close()


def test_opening_removes_what_an_earlier_index_build_left(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    points = [make_point(rng, i) for i in range(20)]
    store = QdrantEdgeStore(tmp_path, DIM)
    store.upsert(points)
    store.close()
    for leftover in ("shard-000001", "build-000001"):
        (tmp_path / leftover).mkdir()
        (tmp_path / leftover / "segment").write_text("stale")

    reopened = QdrantEdgeStore(tmp_path, DIM)
    try:
        assert sorted(p.name for p in tmp_path.iterdir()) == ["CURRENT", "shard-000000"]
        assert reopened.get_many(TENANT, [p.experience.id for p in points]) == {
            p.experience.id: p.experience for p in points
        }
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
        print(point.experience.id, point.marker, flush=True)
        i += 1
    """
)


def test_every_acknowledged_upsert_survives_kill_9(tmp_path: Path) -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(tmp_path)], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    assert child.stdout is not None
    lines = [child.stdout.readline() for _ in range(300)]
    os.kill(child.pid, signal.SIGKILL)
    child.wait(timeout=30)
    lines += child.stdout.read().splitlines()  # printed after an acknowledged upsert, before the kill
    assert child.returncode == -signal.SIGKILL
    acknowledged = {eid: int(marker) for eid, marker in (line.split() for line in lines if line.strip())}
    assert len(acknowledged) >= 300

    store = QdrantEdgeStore(tmp_path, DIM)
    try:
        versions = store.versions(TENANT, list(acknowledged))
        assert {eid: v.marker for eid, v in versions.items()} == acknowledged
        assert all(v.experience is not None and v.experience.tenant == TENANT for v in versions.values())
    finally:
        store.close()
