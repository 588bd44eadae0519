"""`rosemesh bench multilabel`: fixed, tuned and meta policies trained in one run on the same
data and features, scored on the test split, plus prediction throughput through gRPC.

The test split has 199 texts, so one training run's F1 moves by about a point with the seed
alone; the policies are trained and compared over several seeds (classifier and meta-learner
seeded alike), and the goals are judged on the means.
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console

from services.multilabel.client import MultiLabelClient
from services.multilabel.core.bundle import MultiLabelManifest, Policy
from services.multilabel.core.scoring import f1_scores
from services.multilabel.offline.train import (
    MULTILABEL_DATASETS,
    ClassifierConfig,
    MetaConfig,
    label_matrix,
    train_multilabel,
)
from services.supervisor import service_process

METRICS = ("micro_f1", "macro_f1")


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


def _policy_table(manifest: MultiLabelManifest) -> dict[str, dict[str, Any]]:
    return {
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


def run_benchmark(
    dataset: str = "toxicity", *, seeds: int = 5, batch: int = 32, rounds: int = 3, quiet: bool = False
) -> dict[str, Any]:
    console = Console(stderr=True, quiet=quiet)
    splits = MULTILABEL_DATASETS[dataset]()
    runs: list[dict[str, dict[str, Any]]] = []
    with tempfile.TemporaryDirectory(prefix="rosemesh-bench-multilabel-") as scratch:
        models_dir = Path(scratch)
        with service_process("embedding", ["--no-fast"]) as embedding:
            for seed in range(seeds):
                console.rule(f"seed {seed + 1} of {seeds}")
                stored = train_multilabel(
                    dataset,
                    models_dir,
                    embedding.address,
                    name=f"{dataset}-seed{seed}",
                    classifier_config=ClassifierConfig(seed=seed),
                    meta_config=MetaConfig(seed=seed),
                    splits=splits,
                    console=console,
                )
                runs.append(_policy_table(stored.manifest))
            # throughput and the served predictions: the last seed's model, through gRPC
            flags = ["--embedding-target", embedding.address, "--models-dir", str(models_dir),
                     "--default-model", stored.manifest.name, "--no-train-default"]  # fmt: skip
            with service_process("multilabel", flags) as service, console.status("predicting through gRPC"):
                texts = [row.text for row in splits.test]
                predicted, rates = asyncio.run(
                    _through_service(service.address, texts, stored.manifest.labels, batch, rounds)
                )
    manifest = stored.manifest
    served = f1_scores(label_matrix(splits.test, manifest.labels), predicted)
    summary = {
        policy: {
            **{f"{metric}_mean": round(statistics.fmean(run[policy][metric] for run in runs), 4) for metric in METRICS},
            **{f"{metric}_std": round(statistics.pstdev(run[policy][metric] for run in runs), 4) for metric in METRICS},
            **{f"{metric}_per_seed": [run[policy][metric] for run in runs] for metric in METRICS},
        }
        for policy in runs[0]
    }
    meta, tuned = summary["meta"], summary["tuned"]
    return {
        "benchmark": "multilabel",
        "dataset": manifest.dataset,
        "labels": manifest.labels,
        "examples": manifest.training["examples"],
        "seeds": seeds,
        **{f"{policy}_{metric}": summary[policy][f"{metric}_mean"] for policy in summary for metric in METRICS},
        "policies": summary,
        "meta_beats_tuned_macro": meta["macro_f1_mean"] > tuned["macro_f1_mean"],
        "meta_matches_tuned_micro": meta["micro_f1_mean"] >= tuned["micro_f1_mean"],
        "seeds_meta_beats_tuned_macro": sum(
            run["meta"]["macro_f1"] > run["tuned"]["macro_f1"] for run in runs
        ),
        "last_seed_policies": runs[-1],
        "served_meta_micro_f1": round(served.micro_f1, 4),
        "served_meta_macro_f1": round(served.macro_f1, 4),
        "predictions_per_s": round(statistics.median(rates), 1),
        "rounds_predictions_per_s": [round(r, 1) for r in rates],
        "batch_size": batch,
        "last_seed_dev_reward_curve": manifest.training["dev_reward_curve"],
        "config": {"classifier": manifest.training["classifier"], "meta": manifest.training["meta"]},
    }
