"""`rosemesh bench earlyexit`: an ELUE-style report through the gRPC service, every operating
point chosen on the dev split and measured on the test split, against the plain fine-tuned
classifier users would otherwise run.

Per data set: the multi-exit model's static exits 1-6, an entropy-threshold sweep and patience,
the HashEE variants, and the plain model (one graph). Each point's accuracy and FLOPs on dev
choose the operating points: the cheapest within one point of the plain model's dev accuracy,
layer-wise and HashEE. The test split then measures every point once (the frontier picture) and
times the chosen points and the plain model over interleaved rounds, so that machine noise hits
them alike; speed-ups are per-round ratios, reported as their median and spread.
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
    ONE_POINT,
    TrainConfig,
    seconds_per_step,
    served_name,
    sweep_policies,
    train_dataset,
    training_plan,
)
from services.offline.datasets import CLASSIFICATION_DATASETS
from services.runtime.config import default_models_dir
from services.supervisor import service_process

GOAL_DATASET = "rotten_tomatoes"


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


@dataclass(frozen=True)
class Chosen:
    """Indices into the points: the plain baseline, the multi-exit model at full depth, and the
    cheapest layer-wise and HashEE points within one point of the plain model (None if none is)."""

    plain: int
    full: int
    layer_wise: int | None
    hashee: int | None


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
    plain = Point(served_name(dataset, "plain"), ExitPolicy(ExitMode.STATIC, static_layer=depth), ModelKind.PLAIN)
    return [plain, *multi, *hashee]


def choose_operating_points(points: Sequence[Point], dev: Sequence[Measured]) -> Chosen:
    """The operating points, from the dev split alone: within one accuracy point of the plain
    model on dev, the fewest mean FLOPs on dev."""
    plain = next(i for i, p in enumerate(points) if p.kind is ModelKind.PLAIN)
    depth = points[plain].policy.static_layer
    full = next(
        i
        for i, p in enumerate(points)
        if p.kind is ModelKind.MULTI_EXIT and p.policy == ExitPolicy(ExitMode.STATIC, static_layer=depth)
    )
    floor = dev[plain].accuracy - ONE_POINT - 1e-9

    def cheapest(kind: ModelKind) -> int | None:
        within = [i for i, p in enumerate(points) if p.kind is kind and dev[i].accuracy >= floor]
        return min(within, key=lambda i: dev[i].mean_flops) if within else None

    return Chosen(plain, full, cheapest(ModelKind.MULTI_EXIT), cheapest(ModelKind.HASHEE))


def _ratios(numerator: list[float], denominator: list[float]) -> list[float]:
    return [a / b for a, b in zip(numerator, denominator, strict=True)]


def summarise(
    dataset: str, points: list[Point], dev: list[Measured], test: list[Measured], chosen: Chosen
) -> dict[str, Any]:
    """The data set's test frontier and its headline figures at the dev-chosen points."""
    plain = test[chosen.plain]
    rows = []
    for index, (point, d, t) in enumerate(zip(points, dev, test, strict=True)):
        rows.append(
            {
                "model": point.model,
                "policy": point.policy.label,
                "kind": point.kind.value,
                "dev_accuracy": round(d.accuracy, 4),
                "dev_flops": round(d.mean_flops),
                "accuracy": round(t.accuracy, 4),
                "mean_layers": round(t.mean_layers, 3),
                "flops": round(t.mean_flops),
                "throughput": round(t.throughput, 1),
                "flops_ratio": round(plain.mean_flops / t.mean_flops, 3),
                "chosen": index in (chosen.layer_wise, chosen.hashee),
            }
        )

    def speedup(index: int | None) -> tuple[float | None, list[float] | None]:
        if index is None:
            return None, None
        ratios = _ratios(test[index].rates, plain.rates)
        return round(statistics.median(ratios), 3), [round(min(ratios), 3), round(max(ratios), 3)]

    layer_speedup, layer_spread = speedup(chosen.layer_wise)
    hashee_speedup, hashee_spread = speedup(chosen.hashee)
    full_speedup, _ = speedup(chosen.full)
    layer_wise = rows[chosen.layer_wise] if chosen.layer_wise is not None else None
    hashee = rows[chosen.hashee] if chosen.hashee is not None else None
    return {
        "dataset": dataset,
        "chosen_on": "dev",
        "plain_accuracy": round(plain.accuracy, 4),
        "plain_dev_accuracy": round(dev[chosen.plain].accuracy, 4),
        "plain_throughput": round(plain.throughput, 1),
        "full_accuracy": round(test[chosen.full].accuracy, 4),
        "full_speedup": full_speedup,
        "speedup_at_1pt": layer_speedup,
        "speedup_at_1pt_spread": layer_spread,
        "speedup_at_1pt_policy": layer_wise["policy"] if layer_wise else None,
        "speedup_at_1pt_accuracy": layer_wise["accuracy"] if layer_wise else None,
        "hashee_at_1pt_model": hashee["model"] if hashee else None,
        "hashee_flops_ratio_at_1pt": hashee["flops_ratio"] if hashee else None,
        "hashee_speedup_at_1pt": hashee_speedup,
        "hashee_speedup_at_1pt_spread": hashee_spread,
        "hashee_at_1pt_accuracy": hashee["accuracy"] if hashee else None,
        "timing_rounds": len(plain.rates),
        "points": rows,
    }


def _family(row: dict[str, Any]) -> str:
    """The plot line a point belongs to: static, entropy, patience, hashee frequency/random, plain."""
    if row["kind"] == ModelKind.PLAIN.value:
        return "plain"
    if row["kind"] == ModelKind.HASHEE.value:
        return "hashee random" if "random" in row["model"] else "hashee frequency"
    return row["policy"].split("-")[0].split("<")[0]


def plot_frontiers(reports: list[dict[str, Any]], path: Path) -> None:
    """Test accuracy against mean GFLOPs per text, one panel per data set; the dev-chosen points ringed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(reports), figsize=(5.5 * len(reports), 4.4), squeeze=False)
    styles = {"static": "o-", "entropy": "s-", "patience": "^-", "hashee frequency": "D-", "hashee random": "*", "plain": "P"}
    for axis, report in zip(axes[0], reports, strict=True):
        groups: dict[str, list[dict[str, Any]]] = {}
        for row in report["points"]:
            groups.setdefault(_family(row), []).append(row)
        for family, rows in groups.items():
            rows = sorted(rows, key=lambda r: r["flops"])
            axis.plot(
                [r["flops"] / 1e9 for r in rows], [100 * r["accuracy"] for r in rows], styles.get(family, "*"),
                label=family, markersize=9 if family in ("plain", "hashee frequency") else 5,
            )  # fmt: skip
        chosen = [r for r in report["points"] if r["chosen"]]
        axis.plot(
            [r["flops"] / 1e9 for r in chosen], [100 * r["accuracy"] for r in chosen], "o", markersize=16,
            markerfacecolor="none", markeredgecolor="red", label="chosen on dev",
        )  # fmt: skip
        axis.axhline(100 * (report["plain_accuracy"] - ONE_POINT), color="black", linestyle=":", linewidth=0.8,
                     label="plain - 1 pt (test)")  # fmt: skip
        speedup = report["speedup_at_1pt"]
        axis.set_title(
            f"{report['dataset']}: test-measured frontier\nspeed-up at 1 pt (dev-chosen) "
            + (f"{speedup:.2f}x" if speedup is not None else "none within 1 pt")
        )
        axis.set_xlabel("mean GFLOPs per text")
        axis.set_ylabel("test accuracy (%)")
        axis.grid(alpha=0.3)
        axis.legend(fontsize=7)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)


HEADLINE = (
    "chosen_on", "plain_accuracy", "full_accuracy", "full_speedup", "speedup_at_1pt", "speedup_at_1pt_spread",
    "speedup_at_1pt_policy", "speedup_at_1pt_accuracy", "hashee_flops_ratio_at_1pt", "hashee_speedup_at_1pt",
    "hashee_speedup_at_1pt_spread", "hashee_at_1pt_model", "hashee_at_1pt_accuracy",
)  # fmt: skip


def _columns(pairs: list[tuple[str, int]]) -> tuple[list[str], list[int]]:
    return [text for text, _ in pairs], [label for _, label in pairs]


@dataclass
class _Work:
    dataset: str
    points: list[Point]
    dev: tuple[list[str], list[int]]
    test: tuple[list[str], list[int]]


class TrainingTooLong(ValueError):
    """The models the bench must train first would take longer than its time cap."""


@dataclass(frozen=True)
class TrainingEstimate:
    models: list[str]
    minutes: float


def check_training_time(
    datasets: Sequence[str], models_dir: Path, config: TrainConfig, max_minutes: float, console: Console
) -> TrainingEstimate:
    """Say what training the bench needs first (published models are reused), and refuse
    before starting if this machine would take longer than ``max_minutes``."""
    minutes, models = 0.0, []
    for dataset in datasets:
        planned = training_plan(dataset, models_dir, MODEL_VARIANTS, config)
        if planned:
            steps = sum(p.steps for p in planned)
            minutes += steps * seconds_per_step(dataset, config) / 60
            models += [p.name for p in planned]
    if not models:
        console.log("every model is already trained with this configuration; reusing them")
        return TrainingEstimate([], 0.0)
    console.log(
        f"training {len(models)} models first ({', '.join(models)}): about {minutes:.0f} min on this machine, "
        f"capped at {max_minutes:.0f} min"
    )
    if minutes > max_minutes:
        raise TrainingTooLong(
            f"training {len(models)} models would take about {minutes:.0f} min, over the {max_minutes:.0f} min cap; "
            "raise --max-train-minutes, train fewer --examples, or train them first with `rosemesh train earlyexit`"
        )
    return TrainingEstimate(models, minutes)


def run_benchmark(
    datasets: Sequence[str] = (GOAL_DATASET,),
    *,
    texts: int = 1000,
    rounds: int = 5,
    batch_size: int = 32,
    config: TrainConfig = TrainConfig(),
    max_train_minutes: float = 120.0,
    plot_path: Path | None = None,
    quiet: bool = False,
) -> dict[str, Any]:
    if rounds < 3:
        raise ValueError(f"the spread needs at least 3 timing rounds, got {rounds}")
    console = Console(stderr=True, quiet=quiet)
    models_dir = default_models_dir()
    estimate = check_training_time(datasets, models_dir, config, max_train_minutes, console)
    work: list[_Work] = []
    trained_began = time.perf_counter()
    for dataset in datasets:
        splits = CLASSIFICATION_DATASETS[dataset]()
        stored = train_dataset(dataset, models_dir, MODEL_VARIANTS, config, console=console)
        index = {label: i for i, label in enumerate(splits.labels)}
        # The whole dev split chooses; ``texts`` of the test split measure.
        dev = [(r.text, index[r.label]) for r in splits.dev]
        test = [(r.text, index[r.label]) for r in splits.test[:texts]]
        points = _points(dataset, stored[0].manifest.num_layers, len(splits.labels))
        work.append(_Work(dataset, points, _columns(dev), _columns(test)))
    training_seconds = time.perf_counter() - trained_began

    flags = ["--models-dir", str(models_dir), "--no-train-default", "--batch-size", str(batch_size)]
    flags += ["--max-texts", str(max(batch_size, 1)), "--default-model", datasets[0]]
    reports = []
    total = sum(2 * len(w.points) + 4 * rounds for w in work)
    with (
        service_process("earlyexit", flags) as service,
        Progress(*counting_columns(), console=console) as progress,
    ):
        task = progress.add_task("operating points through gRPC", total=total)

        async def measure(w: _Work) -> dict[str, Any]:
            async with EarlyExitClient(service.address, timeout_s=120) as client:

                async def run(point: Point, split: tuple[list[str], list[int]], what: str) -> Measured:
                    progress.update(task, advance=1, description=f"{w.dataset} {what}: {point.model} {point.policy.label}")
                    return await _classify_all(client, point, *split, batch_size)

                await run(w.points[0], (w.test[0][:batch_size], w.test[1][:batch_size]), "warm-up")
                dev = [await run(point, w.dev, "dev") for point in w.points]
                chosen = choose_operating_points(w.points, dev)
                test = [await run(point, w.test, "test") for point in w.points]
                timed = list(dict.fromkeys(i for i in (chosen.plain, chosen.full, chosen.layer_wise, chosen.hashee) if i is not None))
                for index in timed:
                    test[index].rates = []
                for round_index in range(rounds):
                    # A rotated order each round, so that no point always runs first or last.
                    shift = round_index % len(timed)
                    for index in timed[shift:] + timed[:shift]:
                        measured = await run(w.points[index], w.test, f"timing round {round_index + 1}")
                        test[index].rates += measured.rates
                return summarise(w.dataset, w.points, dev, test, chosen)

        for w in work:
            reports.append(asyncio.run(measure(w)))
    if plot_path is not None:
        plot_frontiers(reports, plot_path)
    headline = next((r for r in reports if r["dataset"] == GOAL_DATASET), reports[0])
    return {
        "benchmark": "earlyexit",
        "backend": "onnxruntime",
        "base_model": "all-MiniLM-L6-v2",
        "batch_size": batch_size,
        "test_texts": texts,
        "timing_rounds": rounds,
        "one_point": ONE_POINT,
        "training": {
            "epochs": config.epochs, "multiexit_epochs": config.multiexit_epochs, "train_examples": config.train_limit,
            "distill_weight": config.distill_weight, "distill_temperature": config.distill_temperature,
            "distill_from": config.distill_from, "models_trained": estimate.models,
            "estimated_minutes": round(estimate.minutes, 1), "minutes": round(training_seconds / 60, 1),
            "max_minutes": max_train_minutes,
        },  # fmt: skip
        "dataset": headline["dataset"],
        **{key: headline[key] for key in HEADLINE},
        "datasets": {r["dataset"]: r for r in reports},
        "plot": str(plot_path) if plot_path else None,
    }
