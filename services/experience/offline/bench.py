"""`rosemesh bench experience`: Orchestrate latency through gRPC at large pool sizes.

Pools are built from real questions: CommonsenseQA and ASDiv questions are embedded by the
embedding service, and each pool point is one of those embeddings with Gaussian noise added
(cosine about 0.86 to its source), so the similarity distribution looks like a real topic mix.
Uncertainty follows 20 simulated sampled answers per question, complexity a gamma spread of
step counts. Points go straight into the store, which then builds its HNSW index (minutes at
100k); queries are held-out real questions.
"""

from __future__ import annotations

import asyncio
import math
import statistics
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.progress import Progress
from rosemesh.experience.v1 import experience_pb2 as pb

from services.embedding.client import EmbeddingClient
from services.experience.client import ExperienceClient
from services.experience.core.experience import Experience, experience_id
from services.experience.core.ports import ExperienceStore, StoredPoint
from services.experience.core.record import entropy
from services.experience.server import ExperienceSettings, build_store
from services.offline.datasets import asdiv, commonsense_qa
from services.runtime.config import load_settings
from services.supervisor import service_process

TENANT = "bench"
HELD_OUT = 200  # the last CommonsenseQA questions are queries, never pool sources


async def _embed_all(address: str, texts: list[str]) -> np.ndarray:
    async with EmbeddingClient(address, timeout_s=120) as client:
        parts = [(await client.embed(texts[i : i + 64])).vectors for i in range(0, len(texts), 64)]
    return np.concatenate(parts)


def _pool_points(sources: np.ndarray, size: int, seed: int) -> list[StoredPoint]:
    rng = np.random.default_rng(seed)
    dimension = sources.shape[1]
    base = sources[rng.integers(len(sources), size=size)]
    vectors = base + rng.normal(0, 0.6 / math.sqrt(dimension), size=base.shape).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    correct = rng.beta(4, 1.5, size=size)
    now = time.time()
    points = []
    for i in range(size):
        counts = rng.multinomial(20, [correct[i], *([(1 - correct[i]) / 4] * 4)])
        majority = int(counts.max())
        question = f"pool question {i}"
        experience = Experience(
            id=experience_id(TENANT, question),
            tenant=TENANT,
            question=question,
            reasoning="step\n" * 3,
            answer="A",
            uncertainty=entropy([int(c) for c in counts]),
            complexity=round(float(rng.gamma(4, 1.2)) + 1, 2),
            path_count=20,
            majority_count=majority,
            create_time=now,
            update_time=now,
        )
        points.append(StoredPoint(experience, vectors[i]))
    return points


def _open_store(data_dir: Path, dimension: int) -> ExperienceStore:
    return build_store(load_settings(ExperienceSettings, ["--data-dir", str(data_dir)]), dimension)


def _fill(data_dir: Path, points: list[StoredPoint], dimension: int, console: Console) -> None:
    store = _open_store(data_dir, dimension)
    try:
        with Progress(console=console, transient=True) as progress:
            task = progress.add_task(f"loading {len(points):,} experiences", total=len(points))
            for start in range(0, len(points), 2000):
                store.upsert(points[start : start + 2000])
                progress.advance(task, min(2000, len(points) - start))
    finally:
        store.close()


def _percentiles(latencies_ms: list[float]) -> dict[str, float]:
    ordered = sorted(latencies_ms)
    return {
        "p50_ms": round(statistics.median(ordered), 2),
        "p99_ms": round(ordered[min(len(ordered) - 1, math.ceil(0.99 * len(ordered)) - 1)], 2),
    }


async def _measure(
    address: str, queries: list[str], k: int, strategy: int, search_mode: int = pb.SEARCH_MODE_EXACT
) -> tuple[dict[str, float], list[list[str]]]:
    async with ExperienceClient(address, TENANT, timeout_s=600) as client:
        # The tenant loads on first use, and a sublinear search runs exact until its partition is built.
        while (await client.orchestrate(queries[0], k=k, strategy=strategy, search_mode=search_mode)).search_mode != search_mode:
            await asyncio.sleep(1)
        for question in queries[:10]:  # warm-up
            await client.orchestrate(question, k=k, strategy=strategy, search_mode=search_mode)
        latencies, picks = [], []
        for question in queries:
            began = time.perf_counter()
            response = await client.orchestrate(question, k=k, strategy=strategy, search_mode=search_mode)
            latencies.append((time.perf_counter() - began) * 1000)
            picks.append([d.experience.id for d in response.demonstrations])
    return _percentiles(latencies), picks


def _agreement(exact: list[list[str]], approximate: list[list[str]]) -> float:
    """Mean share of the exact demonstrations that the approximate run also picked."""
    shares = [len(set(a) & set(e)) / len(e) for e, a in zip(exact, approximate, strict=True) if e]
    return round(statistics.fmean(shares), 4)


def _pool_ready(data_dir: Path, dimension: int, size: int) -> bool:
    """True when ``data_dir`` already holds this benchmark's pool of ``size``."""
    if not (data_dir / "CURRENT").exists():
        return False
    store = _open_store(data_dir, dimension)
    try:
        return store.count(TENANT) == size
    finally:
        store.close()


@contextmanager
def _pool_dir(keep_dir: Path | None, size: int) -> Iterator[Path]:
    """A kept folder per pool size (reused by later runs), or a temporary one."""
    if keep_dir is not None:
        path = keep_dir / f"pool-{size}"
        path.mkdir(parents=True, exist_ok=True)
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="rosemesh-bench-") as tmp:
        yield Path(tmp)


def run_benchmark(
    sizes: list[int],
    k: int = 8,
    queries: int = 200,
    quiet: bool = False,
    seed: int = 0,
    keep_dir: Path | None = None,
) -> dict[str, Any]:
    console = Console(stderr=True, quiet=quiet)
    sources = [q.prompt() for q in commonsense_qa()[:-HELD_OUT]] + [f"{a.passage} {a.question}" for a in asdiv()]
    held_out = [q.prompt() for q in commonsense_qa()[-HELD_OUT:]][:queries]
    results = []
    with service_process("embedding", ["--no-fast"]) as embedding:
        with console.status(f"embedding {len(sources)} source and {len(held_out)} query questions"):
            source_vectors = asyncio.run(_embed_all(embedding.address, sources))
        for size in sizes:
            with _pool_dir(keep_dir, size) as data_dir:
                if not _pool_ready(data_dir, source_vectors.shape[1], size):
                    _fill(data_dir, _pool_points(source_vectors, size, seed), source_vectors.shape[1], console)
                flags = ["--embedding-target", embedding.address, "--data-dir", str(data_dir)]
                with service_process("experience", flags, startup_timeout_s=600) as experience:
                    with console.status(f"{size:,}: loading the pool and partitioning it"):
                        # Timed in quiet: no background load or partition under any measurement.
                        asyncio.run(_measure(experience.address, held_out[:1], k, pb.STRATEGY_ROSE, pb.SEARCH_MODE_SUBLINEAR))
                    with console.status(f"{size:,}: ROSE exact"):
                        rose, exact_picks = asyncio.run(_measure(experience.address, held_out, k, pb.STRATEGY_ROSE))
                    with console.status(f"{size:,}: ROSE sublinear"):
                        sublinear, sublinear_picks = asyncio.run(
                            _measure(experience.address, held_out, k, pb.STRATEGY_ROSE, pb.SEARCH_MODE_SUBLINEAR)
                        )
                    with console.status(f"{size:,}: SIMILARITY_TOPK"):
                        topk, _ = asyncio.run(_measure(experience.address, held_out, k, pb.STRATEGY_SIMILARITY_TOPK))
            entry = {
                "pool_size": size,
                "rose_exact": rose,
                "similarity_topk": topk,
                "p99_ratio_rose_to_topk": round(rose["p99_ms"] / topk["p99_ms"], 3),
                "rose_sublinear": sublinear | {"agreement": _agreement(exact_picks, sublinear_picks)},
            }
            console.log(entry)
            results.append(entry)
    return {"benchmark": "experience", "k": k, "queries": len(held_out), "tenant_pools": results}
