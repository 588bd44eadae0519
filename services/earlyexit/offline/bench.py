"""`rosemesh bench earlyexit`: an ELUE-style report, every operating point measured through the
gRPC service in one run, the full 6-layer model among them as the baseline.

Per data set: static exits 1-6, an entropy-threshold sweep, patience, and HashEE with the
frequency and the random hash. Each point's accuracy, mean layers and FLOPs come from the
service's own answers; throughput is the median over rounds that visit every point in turn,
so machine noise hits all points alike.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.progress import Progress

from services.common.progress import counting_columns
from services.earlyexit.client import EarlyExitClient
from services.earlyexit.core.policy import ExitMode, ExitPolicy, ModelKind
from services.earlyexit.offline.train import (
    MODEL_VARIANTS,
    TrainConfig,
    served_name,
    sweep_policies,
    train_dataset,
)
from services.offline.datasets import CLASSIFICATION_DATASETS
from services.runtime.config import default_models_dir
from services.supervisor import service_process

GOAL_DATASET = "rotten_tomatoes"
#: Accuracy loss allowed for the "at 1 point" figures.
ONE_POINT = 0.01


@dataclass(frozen=True)
class Point:
    model: str
    policy: ExitPolicy
    kind: ModelKind


@dataclass
class Measured:
    accuracy: float
    mean_layers: float
    mean_flops: float
    rates: list[float]

    @property
    def throughput(self) -> float:
        return statistics.median(self.rates)


async def _classify_all(
    client: EarlyExitClient, point: Point, texts: Sequence[str], gold: Sequence[int], batch_size: int
) -> Measured:
    correct, layers, flops = 0, [], []
    began = time.perf_counter()
    for start in range(0, len(texts), batch_size):
        response = await client.classify(
            list(texts[start : start + batch_size]), model=point.model, policy=point.policy
        )
        for result, label in zip(response.results, gold[start : start + batch_size], strict=True):
            correct += result.label_index == label
            flops.append(result.flops)
            if result.token_exits:
                layers.append(float(np.mean([t.exit_layer for t in result.token_exits])))
            else:
                layers.append(float(result.exit_layer))
    seconds = time.perf_counter() - began
    return Measured(
        correct / len(texts), float(np.mean(layers)), float(np.mean(flops)), [len(texts) / seconds]
    )


def _points(dataset: str, depth: int, num_labels: int) -> list[Point]:
    multi = [
        Point(dataset, policy, ModelKind.MULTI_EXIT)
        for policy in sweep_policies(ModelKind.MULTI_EXIT, depth, num_labels)
    ]
    hashee = [
        Point(served_name(dataset, variant), ExitPolicy(ExitMode.HASHEE), ModelKind.HASHEE)
        for variant in MODEL_VARIANTS
        if variant.startswith("hashee")
    ]
    return multi + hashee


def summarise(
    dataset: str, points: list[Point], measured: list[Measured], plain_accuracy: float | None
) -> dict[str, Any]:
    """The data set's frontier and its headline ratios against the full model (static exit 6)."""
    depth = max(p.policy.static_layer or 0 for p in points)
    full_index = next(
        i for i, p in enumerate(points) if p.policy.mode is ExitMode.STATIC and p.policy.static_layer == depth
    )
    full = measured[full_index]
    rows = []
    for point, m in zip(points, measured, strict=True):
        rows.append(
            {
                "model": point.model,
                "policy": point.policy.label,
                "accuracy": round(m.accuracy, 4),
                "mean_layers": round(m.mean_layers, 3),
                "flops": round(m.mean_flops),
                "throughput": round(m.throughput, 1),
                "speedup": round(m.throughput / full.throughput, 3),
                "flops_ratio": round(full.mean_flops / m.mean_flops, 3),
            }
        )
    floor = full.accuracy - ONE_POINT - 1e-9
    layer_wise = [
        r
        for r, p in zip(rows, points, strict=True)
        if p.kind is ModelKind.MULTI_EXIT and r["accuracy"] >= floor
    ]
    best = max(layer_wise, key=lambda r: r["speedup"])
    hashee_ok = [
        r for r, p in zip(rows, points, strict=True) if p.kind is ModelKind.HASHEE and r["accuracy"] >= floor
    ]
    best_hashee = max(hashee_ok, key=lambda r: r["flops_ratio"]) if hashee_ok else None
    return {
        "dataset": dataset,
        "full_accuracy": round(full.accuracy, 4),
        "full_throughput": round(full.throughput, 1),
        "full_flops": round(full.mean_flops),
        "plain_accuracy": None if plain_accuracy is None else round(plain_accuracy, 4),
        "points": rows,
        "speedup_at_1pt": best["speedup"],
        "speedup_at_1pt_policy": best["policy"],
        "hashee_flops_ratio_at_1pt": best_hashee["flops_ratio"] if best_hashee else None,
        "hashee_at_1pt_model": best_hashee["model"] if best_hashee else None,
    }


def _family(row: dict[str, Any]) -> str:
    """The plot line a point belongs to: static, entropy, patience, hashee frequency/random."""
    if "hashee" in row["model"]:
        return "hashee random" if "random" in row["model"] else "hashee frequency"
    return row["policy"].split("-")[0].split("<")[0]


def plot_frontiers(reports: list[dict[str, Any]], path: Path) -> None:
    """Accuracy against mean GFLOPs per text, one panel per data set."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(reports), figsize=(5.5 * len(reports), 4.2), squeeze=False)
    for axis, report in zip(axes[0], reports, strict=True):
        groups: dict[str, list[dict[str, Any]]] = {}
        for row in report["points"]:
            family = _family(row)
            groups.setdefault(family, []).append(row)
        styles = {"static": "o-", "entropy": "s-", "patience": "^-", "hashee frequency": "D-", "hashee random": "*"}
        for family, rows in groups.items():
            rows = sorted(rows, key=lambda r: r["flops"])
            axis.plot(
                [r["flops"] / 1e9 for r in rows], [100 * r["accuracy"] for r in rows], styles.get(family, "*"),
                label=family, markersize=9 if family.startswith("hashee") else 5,
            )  # fmt: skip
        axis.axhline(100 * report["full_accuracy"], color="grey", linestyle=":", label="full model")
        if report["plain_accuracy"] is not None:
            axis.axhline(
                100 * report["plain_accuracy"],
                color="black",
                linestyle="--",
                linewidth=0.8,
                label="plain fine-tuned",
            )
        axis.set_title(f"{report['dataset']}: speed-up at 1 pt {report['speedup_at_1pt']:.2f}x")
        axis.set_xlabel("mean GFLOPs per text")
        axis.set_ylabel("accuracy (%)")
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)


def run_benchmark(
    datasets: Sequence[str] = (GOAL_DATASET,),
    *,
    texts: int = 1000,
    rounds: int = 2,
    batch_size: int = 32,
    config: TrainConfig = TrainConfig(),
    plot_path: Path | None = None,
    quiet: bool = False,
) -> dict[str, Any]:
    console = Console(stderr=True, quiet=quiet)
    models_dir = default_models_dir()
    plain: dict[str, float | None] = {}
    work: list[tuple[str, list[Point], list[str], list[int]]] = []
    for dataset in datasets:
        splits = CLASSIFICATION_DATASETS[dataset]()
        stored = train_dataset(dataset, models_dir, MODEL_VARIANTS, config, console=console)
        plain[dataset] = (
            next(s for s in stored if s.name == served_name(dataset, "plain"))
            .manifest.operating_points[0]
            .accuracy
        )
        index = {label: i for i, label in enumerate(splits.labels)}
        rows = splits.test[:texts]
        points = _points(dataset, stored[0].manifest.num_layers, len(splits.labels))
        work.append((dataset, points, [r.text for r in rows], [index[r.label] for r in rows]))

    flags = ["--models-dir", str(models_dir), "--no-train-default", "--batch-size", str(batch_size)]
    flags += ["--max-texts", str(max(batch_size, 1)), "--default-model", datasets[0]]
    measured: dict[str, list[Measured]] = {}
    total = rounds * sum(len(points) for _, points, _, _ in work)
    with (
        service_process("earlyexit", flags) as service,
        Progress(
            *counting_columns(),
            console=console,
        ) as progress,
    ):
        task = progress.add_task("operating points through gRPC", total=total)

        async def measure() -> None:
            async with EarlyExitClient(service.address, timeout_s=120) as client:
                for round_index in range(rounds):
                    for dataset, points, texts_, gold in work:
                        await _classify_all(
                            client, points[0], texts_[:batch_size], gold[:batch_size], batch_size
                        )  # warm
                        for i, point in enumerate(points):
                            progress.update(
                                task,
                                advance=1,
                                description=f"round {round_index + 1}: {dataset} {point.policy.label}",
                            )
                            result = await _classify_all(client, point, texts_, gold, batch_size)
                            if round_index == 0:
                                measured.setdefault(dataset, []).append(result)
                            else:
                                measured[dataset][i].rates += result.rates

        asyncio.run(measure())

    reports = [
        summarise(dataset, points, measured[dataset], plain[dataset]) for dataset, points, _, _ in work
    ]
    if plot_path is not None:
        plot_frontiers(reports, plot_path)
    headline = next((r for r in reports if r["dataset"] == GOAL_DATASET), reports[0])
    return {
        "benchmark": "earlyexit",
        "backend": "onnxruntime",
        "base_model": "all-MiniLM-L6-v2",
        "batch_size": batch_size,
        "texts_per_dataset": texts,
        "rounds": rounds,
        "training": {"epochs": config.epochs, "train_examples": config.train_limit},
        **{
            key: headline[key]
            for key in (
                "dataset",
                "full_accuracy",
                "plain_accuracy",
                "points",
                "speedup_at_1pt",
                "speedup_at_1pt_policy",
                "hashee_flops_ratio_at_1pt",
            )
        },
        "full_within_1pt_of_plain": headline["plain_accuracy"] is not None
        and abs(headline["full_accuracy"] - headline["plain_accuracy"]) <= ONE_POINT,
        "datasets": {r["dataset"]: r for r in reports},
        "plot": str(plot_path) if plot_path else None,
    }
