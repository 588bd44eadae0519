"""`rosemesh bench multilabel`: fixed, tuned and meta policies trained in one run on the same
data and features, scored on the test split, plus prediction throughput through gRPC."""

from __future__ import annotations

import asyncio
import statistics
import time
from typing import Any

import numpy as np
from rich.console import Console

from services.multilabel.client import MultiLabelClient
from services.multilabel.core.registry import Policy
from services.multilabel.core.scoring import f1_scores
from services.multilabel.train import (
    MULTILABEL_DATASETS,
    label_matrix,
    train_multilabel,
)
from services.runtime.config import default_models_dir
from services.supervisor import service_process


async def _through_service(
    address: str, texts: list[str], labels: list[str], batch: int, rounds: int
) -> tuple[np.ndarray, list[float]]:
    """Meta predictions for every text, and texts/s per round."""
    rates, predicted = [], np.zeros((len(texts), len(labels)), dtype=bool)
    async with MultiLabelClient(address, timeout_s=60) as client:
        await client.predict(texts[:batch])  # warm
        for _ in range(rounds):
            began = time.perf_counter()
            for start in range(0, len(texts), batch):
                response = await client.predict(texts[start : start + batch], policy=Policy.META)
                for row, prediction in enumerate(response.predictions, start=start):
                    predicted[row] = [score.predicted for score in prediction.scores]
            rates.append(len(texts) / (time.perf_counter() - began))
    return predicted, rates


def run_benchmark(
    dataset: str = "toxicity", *, batch: int = 32, rounds: int = 3, quiet: bool = False
) -> dict[str, Any]:
    console = Console(stderr=True, quiet=quiet)
    models_dir = default_models_dir()
    splits = MULTILABEL_DATASETS[dataset]()
    with service_process("embedding", ["--no-int8"]) as embedding:
        stored = train_multilabel(dataset, models_dir, embedding.address, splits=splits, console=console)
        flags = [
            "--embedding-target",
            embedding.address,
            "--default-model",
            stored.manifest.name,
            "--no-train-default",
        ]
        with service_process("multilabel", flags) as service, console.status("predicting through gRPC"):
            texts = [row.text for row in splits.test]
            predicted, rates = asyncio.run(
                _through_service(service.address, texts, stored.manifest.labels, batch, rounds)
            )
    manifest = stored.manifest
    served = f1_scores(label_matrix(splits.test, manifest.labels), predicted)
    policies = {
        policy.value: {
            "micro_f1": round(record.test_metrics.micro_f1, 4),
            "macro_f1": round(record.test_metrics.macro_f1, 4),
            "micro_precision": round(record.test_metrics.micro_precision, 4),
            "micro_recall": round(record.test_metrics.micro_recall, 4),
            "thresholds": [round(t, 2) for t in record.thresholds],
            "loss_weights": record.loss_weights,
        }
        for policy, record in manifest.policies.items()
    }
    meta, tuned = policies["meta"], policies["tuned"]
    return {
        "benchmark": "multilabel",
        "dataset": manifest.dataset,
        "labels": manifest.labels,
        "examples": manifest.training["examples"],
        "model": manifest.name,
        "version": manifest.version,
        **{
            f"{name}_{metric}": values[metric]
            for name, values in policies.items()
            for metric in ("micro_f1", "macro_f1")
        },
        "policies": policies,
        "meta_beats_tuned_macro": meta["macro_f1"] > tuned["macro_f1"],
        "meta_matches_tuned_micro": meta["micro_f1"] >= tuned["micro_f1"],
        "served_meta_micro_f1": round(served.micro_f1, 4),
        "served_meta_macro_f1": round(served.macro_f1, 4),
        "predictions_per_s": round(statistics.median(rates), 1),
        "rounds_predictions_per_s": [round(r, 1) for r in rates],
        "batch_size": batch,
        "dev_reward_curve": manifest.training["dev_reward_curve"],
        "config": {"classifier": manifest.training["classifier"], "meta": manifest.training["meta"]},
    }
