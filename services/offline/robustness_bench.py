"""`rosemesh bench robustness`: how much each served classifier variant degrades under realistic
input noise (NPRR, Yu et al.), through the real services.

For each data set, every variant the mesh serves classifies the test texts clean and perturbed
(the ``mixed`` set: each text one family, drawn from its seed, at the default severity; each
family is also reported alone). The variants: the plain model, multi-exit at the threshold its
training chose on dev, HashEE, the LPT and LoRA adapters (trained through Adapt), and the
multi-label model under its three policies. Figures:
- 1-best: accuracy clean and perturbed and the relative degradation, (clean - perturbed) / clean;
- N-best: recall of the gold label in the top N labels, clean and perturbed, for N = 1, 3, 5
  below the number of labels, and ``label_rank_spearman``, the mean Spearman correlation of a
  text's label scores clean against perturbed;
- early exit: the exit-layer distribution clean and perturbed, and ``exit_layer_shift``, the
  mean exit layer perturbed less clean (positive: noise makes texts look harder); for HashEE,
  whose texts all reach the top, the mean exit layer of their tokens.
Multi-label reports micro and macro F1 in place of accuracy (``clean_accuracy`` is micro F1).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.progress import Progress
from scipy.stats import spearmanr

from services.common.progress import counting_columns
from services.earlyexit.client import EarlyExitClient
from services.earlyexit.core.bundle import StoredModel
from services.earlyexit.offline.adapters_bench import BENCH_TENANT, _adapt_all, task_name
from services.earlyexit.offline.lora import LoraTrainConfig
from services.earlyexit.offline.lpt import LptConfig
from services.earlyexit.offline.train import TrainConfig, current_or_trained, served_name
from services.multilabel.client import MultiLabelClient
from services.multilabel.core.bundle import Policy
from services.multilabel.core.scoring import f1_scores
from services.multilabel.offline.train import MULTILABEL_DATASETS, label_matrix, train_multilabel
from services.offline.datasets import CLASSIFICATION_DATASETS
from services.offline.perturbations import DEFAULT_SEVERITY, PERTURBATIONS, perturb_texts
from services.runtime.config import default_models_dir
from services.supervisor import service_process

DATASETS = ("banking77",)
EARLYEXIT_VARIANTS = ("plain", "multiexit", "hashee-frequency")
ADAPTER_METHODS = ("lpt", "lora")
NBEST = (1, 3, 5)
BATCH = 32
MIXED = "mixed"


def relative_degradation(clean: float, perturbed: float) -> float:
    return (clean - perturbed) / clean if clean else 0.0


def nbest_recall(scores: np.ndarray, gold: np.ndarray, n: int) -> float:
    """Fraction of texts whose gold label is among their ``n`` top-scored labels."""
    top = np.argsort(-scores, axis=1, kind="stable")[:, :n]
    return float(np.mean([g in row for g, row in zip(gold, top, strict=True)]))


def label_rank_spearman(clean: np.ndarray, perturbed: np.ndarray) -> float:
    """Mean over texts of the Spearman correlation between clean and perturbed label scores."""
    values = [spearmanr(a, b).statistic for a, b in zip(clean, perturbed, strict=True)]
    return float(np.nanmean(values))


def _exit_histogram(layers: np.ndarray, depth: int) -> list[float]:
    """Share of texts exiting at each layer (HashEE: whose mean token exit rounds to it)."""
    return [round(float(np.mean(np.rint(layers) == layer)), 4) for layer in range(1, depth + 1)]


def classification_report(
    gold: np.ndarray,
    clean: np.ndarray,
    perturbed: dict[str, np.ndarray],
    clean_exits: np.ndarray | None = None,
    perturbed_exits: dict[str, np.ndarray] | None = None,
    depth: int = 6,
) -> dict[str, Any]:
    """Figures for one variant from its label scores (texts × labels), clean and per perturbation."""
    noisy = perturbed[MIXED]
    clean_accuracy = float(np.mean(clean.argmax(axis=1) == gold))
    perturbed_accuracy = float(np.mean(noisy.argmax(axis=1) == gold))
    report: dict[str, Any] = {
        "clean_accuracy": round(clean_accuracy, 4),
        "perturbed_accuracy": round(perturbed_accuracy, 4),
        "relative_degradation": round(relative_degradation(clean_accuracy, perturbed_accuracy), 4),
    }
    for n in NBEST:
        if clean.shape[1] > n:
            report[f"nbest_recall@{n}"] = {
                "clean": round(nbest_recall(clean, gold, n), 4),
                "perturbed": round(nbest_recall(noisy, gold, n), 4),
            }
    report["label_rank_spearman"] = round(label_rank_spearman(clean, noisy), 4)
    if clean_exits is not None and perturbed_exits is not None:
        report["exit_layer_shift"] = round(float(perturbed_exits[MIXED].mean() - clean_exits.mean()), 4)
        report["exit_layers"] = {
            "clean": _exit_histogram(clean_exits, depth),
            "perturbed": _exit_histogram(perturbed_exits[MIXED], depth),
        }
    else:
        report["exit_layer_shift"] = None
    report["by_perturbation"] = {
        kind: {
            "accuracy": round(float(np.mean(scores.argmax(axis=1) == gold)), 4),
            "relative_degradation": round(
                relative_degradation(clean_accuracy, float(np.mean(scores.argmax(axis=1) == gold))), 4
            ),
        }
        for kind, scores in perturbed.items()
        if kind != MIXED
    }
    return report


async def _classify(client: EarlyExitClient, texts: list[str], **target: str) -> tuple[np.ndarray, np.ndarray]:
    """Label probabilities and exit layers of every text through Classify."""
    scores, exits = [], []
    for start in range(0, len(texts), BATCH):
        chunk = texts[start : start + BATCH]
        if "task" in target:
            response = await client.classify_task(chunk, target["task"], tenant=BENCH_TENANT)
        else:
            response = await client.classify(chunk, model=target["model"])
        scores += [list(r.probabilities) for r in response.results]
        # HashEE: every text exits at the top; its tokens' mean exit layer is what noise moves.
        exits += [np.mean([t.exit_layer for t in r.token_exits]) if r.token_exits else r.exit_layer for r in response.results]
    return np.asarray(scores, dtype=np.float64), np.asarray(exits)


def perturbed_sets(texts: list[str], severity: float, seed: int) -> dict[str, list[str]]:
    return {kind: perturb_texts(texts, kind, severity, seed) for kind in (MIXED, *PERTURBATIONS)}


async def _earlyexit_reports(
    address: str,
    datasets: Sequence[str],
    methods: Sequence[str],
    texts: int,
    severity: float,
    seed: int,
    progress: Progress,
) -> dict[str, dict[str, Any]]:
    reports: dict[str, dict[str, Any]] = {}
    async with EarlyExitClient(address, timeout_s=600) as client:
        if methods:
            await _adapt_all(client, datasets, methods, LptConfig(), LoraTrainConfig(), progress)
        for dataset in datasets:
            splits = CLASSIFICATION_DATASETS[dataset]()
            index = {label: i for i, label in enumerate(splits.labels)}
            rows = splits.test[:texts] if texts else splits.test
            clean_texts = [r.text for r in rows]
            gold = np.array([index[r.label] for r in rows])
            noisy = perturbed_sets(clean_texts, severity, seed)
            targets = {variant: {"model": served_name(dataset, variant)} for variant in EARLYEXIT_VARIANTS}
            targets |= {method: {"task": task_name(dataset, method)} for method in methods}
            task = progress.add_task(f"classifying {dataset}", total=len(targets) * (1 + len(noisy)))
            dataset_report: dict[str, Any] = {"texts": len(rows), "labels": len(splits.labels)}
            for variant, target in targets.items():
                clean, clean_exits = await _classify(client, clean_texts, **target)
                progress.advance(task)
                perturbed, perturbed_exits = {}, {}
                for kind, variants_texts in noisy.items():
                    perturbed[kind], perturbed_exits[kind] = await _classify(client, variants_texts, **target)
                    progress.advance(task)
                layered = variant in ("multiexit", "hashee-frequency")
                dataset_report[variant] = classification_report(
                    gold, clean, perturbed, clean_exits if layered else None, perturbed_exits if layered else None
                )
            dataset_report["changed_fraction"] = {
                kind: round(float(np.mean([a != b for a, b in zip(clean_texts, noisy_texts, strict=True)])), 4)
                for kind, noisy_texts in noisy.items()
            }
            reports[dataset] = dataset_report
    return reports


def _multilabel_report(gold: np.ndarray, clean: np.ndarray, noisy: dict[str, np.ndarray], thresholds: np.ndarray) -> dict[str, Any]:
    clean_f1 = f1_scores(gold, clean >= thresholds)
    scores = {kind: f1_scores(gold, values >= thresholds) for kind, values in noisy.items()}
    mixed = scores[MIXED]
    report: dict[str, Any] = {
        "clean_accuracy": round(clean_f1.micro_f1, 4),
        "perturbed_accuracy": round(mixed.micro_f1, 4),
        "relative_degradation": round(relative_degradation(clean_f1.micro_f1, mixed.micro_f1), 4),
        "micro_f1": {"clean": round(clean_f1.micro_f1, 4), "perturbed": round(mixed.micro_f1, 4)},
        "macro_f1": {"clean": round(clean_f1.macro_f1, 4), "perturbed": round(mixed.macro_f1, 4)},
        "macro_relative_degradation": round(relative_degradation(clean_f1.macro_f1, mixed.macro_f1), 4),
    }
    labels = gold.shape[1]
    for n in NBEST:
        if labels > n:
            report[f"nbest_recall@{n}"] = {"clean": _label_recall(clean, gold, n), "perturbed": _label_recall(noisy[MIXED], gold, n)}
    report["label_rank_spearman"] = round(label_rank_spearman(clean, noisy[MIXED]), 4)
    report["exit_layer_shift"] = None
    report["by_perturbation"] = {
        kind: {"micro_f1": round(s.micro_f1, 4), "relative_degradation": round(relative_degradation(clean_f1.micro_f1, s.micro_f1), 4)}
        for kind, s in scores.items()
        if kind != MIXED
    }
    return report


def _label_recall(scores: np.ndarray, gold: np.ndarray, n: int) -> float:
    """Of the texts with any gold label, the fraction of their gold labels among the top ``n``."""
    top = np.argsort(-scores, axis=1, kind="stable")[:, :n]
    found = [np.isin(np.flatnonzero(g), row).mean() for g, row in zip(gold, top, strict=True) if g.any()]
    return round(float(np.mean(found)), 4) if found else 0.0


async def _multilabel_scores(address: str, texts: list[str], policy: Policy) -> tuple[np.ndarray, np.ndarray]:
    scores, thresholds = [], None
    async with MultiLabelClient(address, timeout_s=120) as client:
        for start in range(0, len(texts), BATCH):
            response = await client.predict(texts[start : start + BATCH], policy=policy)
            for prediction in response.predictions:
                scores.append([s.probability for s in prediction.scores])
                thresholds = [s.threshold for s in prediction.scores]
    return np.asarray(scores), np.asarray(thresholds)


def _multilabel_reports(
    models_dir: Path, dataset: str, severity: float, seed: int, console: Console, progress: Progress
) -> dict[str, Any]:
    from services.common.model_versions import ModelVersions
    from services.multilabel.core.bundle import StoredMultiLabelModel, models_root

    splits = MULTILABEL_DATASETS[dataset]()
    texts = [row.text for row in splits.test]
    noisy = perturbed_sets(texts, severity, seed)
    with service_process("embedding", ["--no-fast"]) as embedding:
        versions = ModelVersions(models_root(models_dir))
        current = versions.current(dataset)
        stored = (
            StoredMultiLabelModel(versions.path(dataset, current))
            if current
            else train_multilabel(dataset, models_dir, embedding.address, console=console)
        )
        gold = label_matrix(splits.test, stored.manifest.labels)
        flags = ["--embedding-target", embedding.address, "--models-dir", str(models_dir)]
        flags += ["--default-model", stored.manifest.name, "--no-train-default"]
        report: dict[str, Any] = {"texts": len(texts), "labels": len(stored.manifest.labels), "model": stored.manifest.name}
        with service_process("multilabel", flags) as service:
            task = progress.add_task(f"predicting {dataset}", total=len(Policy) * (1 + len(noisy)))
            for policy in Policy:
                clean, thresholds = asyncio.run(_multilabel_scores(service.address, texts, policy))
                progress.advance(task)
                perturbed = {}
                for kind, variant_texts in noisy.items():
                    perturbed[kind], _ = asyncio.run(_multilabel_scores(service.address, variant_texts, policy))
                    progress.advance(task)
                report[f"multilabel-{policy.value}"] = _multilabel_report(gold, clean, perturbed, thresholds)
    return report


def plot_robustness(reports: dict[str, dict[str, Any]], directory: Path) -> list[str]:
    """One picture per data set: each variant's clean accuracy against its relative degradation."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    directory.mkdir(parents=True, exist_ok=True)
    for dataset, report in reports.items():
        variants = {name: r for name, r in report.items() if isinstance(r, dict) and "clean_accuracy" in r}
        figure, axis = plt.subplots(figsize=(6, 4.5))
        for name, r in variants.items():
            axis.scatter(r["clean_accuracy"], r["relative_degradation"] * 100, s=40)
            axis.annotate(name, (r["clean_accuracy"], r["relative_degradation"] * 100), textcoords="offset points", xytext=(5, 4))
        measure = "micro F1" if dataset in MULTILABEL_DATASETS else "accuracy"
        axis.set_xlabel(f"clean {measure}")
        axis.set_ylabel(f"relative degradation under noise (%), severity {DEFAULT_SEVERITY}")
        axis.set_title(f"{dataset}: robustness of each served variant")
        axis.grid(alpha=0.3)
        figure.tight_layout()
        path = directory / f"robustness-{dataset}.png"
        figure.savefig(path, dpi=120)
        plt.close(figure)
        paths.append(str(path))
    return paths


def run_robustness_benchmark(
    datasets: Sequence[str] = DATASETS,
    *,
    multilabel: str | None = "toxicity",
    methods: Sequence[str] = ADAPTER_METHODS,
    texts: int = 1000,
    severity: float = DEFAULT_SEVERITY,
    seed: int = 0,
    config: TrainConfig = TrainConfig(),
    plot_dir: Path | None = Path("docs"),
    quiet: bool = False,
) -> dict[str, Any]:
    console = Console(stderr=True, quiet=quiet)
    models_dir = default_models_dir()
    reports: dict[str, dict[str, Any]] = {}
    stored: list[StoredModel] = []
    for dataset in datasets:
        stored += current_or_trained(dataset, models_dir, EARLYEXIT_VARIANTS, config, console)
    with Progress(*counting_columns(), console=console) as progress:
        if datasets:
            flags = ["--models-dir", str(models_dir), "--no-train-default", "--adapt-workers", "1"]
            flags += ["--default-model", stored[0].name]
            with service_process("earlyexit", flags) as service:
                reports |= asyncio.run(
                    _earlyexit_reports(service.address, datasets, methods, texts, severity, seed, progress)
                )
        if multilabel:
            reports[multilabel] = _multilabel_reports(models_dir, multilabel, severity, seed, console, progress)
    pictures = plot_robustness(reports, plot_dir) if plot_dir is not None else []
    return {
        "benchmark": "robustness",
        "severity": severity,
        "seed": seed,
        "perturbations": list(PERTURBATIONS),
        "left_out": {"synonym": "WordNet is a run-time download that cannot be fetched here; no package here ships a thesaurus"},
        "datasets": reports,
        "pictures": pictures,
    }
