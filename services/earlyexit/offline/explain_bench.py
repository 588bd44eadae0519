"""`rosemesh bench explain`: how faithful Explain's attributions are, through the gRPC service.

For test texts of each data set, the served model is explained by occlusion and integrated
gradients (one default Explain call per text, timed) and by attention weights; a random ranking
is the floor. ERASER's comprehensiveness and sufficiency remove, or keep only, each ranking's
top 20% of words and read the predicted label's probability through Classify. Nothing is tuned:
the steps and the fraction are fixed beforehand, and the texts are a seeded sample of test.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.progress import Progress
from rosemesh.earlyexit.v1 import earlyexit_pb2
from rosemesh.explain.v1 import explain_pb2

from services.common.explain import DEFAULT_STEPS, Words
from services.common.progress import counting_columns
from services.earlyexit.client import EarlyExitClient
from services.earlyexit.offline.train import TrainConfig, current_or_trained, served_name, train_dataset
from services.offline.datasets import CLASSIFICATION_DATASETS
from services.offline.faithfulness import TOP_FRACTION, erase, faithfulness, random_scores
from services.runtime.config import default_models_dir
from services.supervisor import service_process

METHODS = {
    "occlusion": explain_pb2.ATTRIBUTION_METHOD_OCCLUSION,
    "integrated_gradients": explain_pb2.ATTRIBUTION_METHOD_INTEGRATED_GRADIENTS,
    "attention": explain_pb2.ATTRIBUTION_METHOD_ATTENTION,
}
RANDOM_DRAWS = 3
CLASSIFY_BATCH = 32


def _words(text: str, attribution: explain_pb2.Attribution) -> tuple[Words, np.ndarray]:
    spans = [(w.start, w.end) for w in attribution.words]
    return Words(text, spans, np.zeros(0, dtype=np.int64)), np.array([w.score for w in attribution.words])


async def _probabilities(client: EarlyExitClient, model: str, texts: list[str], targets: list[int]) -> np.ndarray:
    out = np.zeros(len(texts))
    for start in range(0, len(texts), CLASSIFY_BATCH):
        response = await client.classify(texts[start : start + CLASSIFY_BATCH], model=model)
        for offset, result in enumerate(response.results):
            out[start + offset] = result.probabilities[targets[start + offset]]
    return out


async def _measure(
    client: EarlyExitClient, model: str, texts: list[str], seed: int, progress: Progress, task: Any
) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    latencies, deltas, full, targets = [], [], [], []
    erased: dict[str, list] = {name: [] for name in [*METHODS, "random"]}
    for text in texts:
        began = time.perf_counter()
        response = await client.explain(earlyexit_pb2.ExplainRequest(texts=[text], model=model))
        latencies.append((time.perf_counter() - began) * 1000)
        attention = await client.explain(
            earlyexit_pb2.ExplainRequest(
                texts=[text], model=model, options=explain_pb2.ExplainOptions(methods=[METHODS["attention"]])
            )
        )
        (explained,) = response.explanations
        by_method = {a.method: a for a in [*explained.attributions, *attention.explanations[0].attributions]}
        target = explained.classification.label_index
        targets.append(target)
        full.append(explained.classification.probabilities[target])
        deltas.append(by_method[METHODS["integrated_gradients"]].convergence_delta)
        for name, code in METHODS.items():
            words, scores = _words(text, by_method[code])
            erased[name].append([erase(words, scores)])
        words, _ = _words(text, by_method[METHODS["occlusion"]])
        erased["random"].append([erase(words, random_scores(words, rng)) for _ in range(RANDOM_DRAWS)])
        progress.advance(task)
    report: dict[str, Any] = {"comprehensiveness": {}, "sufficiency": {}}
    for name, per_text in erased.items():
        draws = len(per_text[0])
        texts_without = [e.without_top for group in per_text for e in group]
        texts_only = [e.only_top for group in per_text for e in group]
        repeated = [t for t in targets for _ in range(draws)]
        without = (await _probabilities(client, model, texts_without, repeated)).reshape(len(texts), draws).mean(axis=1)
        only = (await _probabilities(client, model, texts_only, repeated)).reshape(len(texts), draws).mean(axis=1)
        scores = faithfulness(full, without, only)
        report["comprehensiveness"][name] = round(scores.comprehensiveness, 4)
        report["sufficiency"][name] = round(scores.sufficiency, 4)
    comprehensiveness = report["comprehensiveness"]
    report["comprehensiveness_over_random"] = {
        name: round(comprehensiveness[name] / comprehensiveness["random"], 3)
        for name in ("occlusion", "integrated_gradients")
    }
    report["integrated_gradients_over_attention"] = round(
        comprehensiveness["integrated_gradients"] / comprehensiveness["attention"], 3
    )
    report["explain_p50_ms"] = round(float(np.percentile(latencies, 50)), 1)
    report["explain_p99_ms"] = round(float(np.percentile(latencies, 99)), 1)
    report["ig_convergence_delta_median"] = round(float(np.median(deltas)), 4)
    report["latencies_ms"] = latencies
    return report


def plot_faithfulness(reports: dict[str, dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [*METHODS, "random"]
    figure, axes = plt.subplots(1, 2, figsize=(10, 4))
    width = 0.8 / max(1, len(reports))
    for offset, (dataset, report) in enumerate(reports.items()):
        for axis, measure in zip(axes, ("comprehensiveness", "sufficiency"), strict=True):
            x = np.arange(len(names)) + offset * width
            axis.bar(x, [report[measure][n] for n in names], width, label=dataset)
            axis.set_xticks(np.arange(len(names)) + width * (len(reports) - 1) / 2, names, rotation=15)
            axis.set_title(f"{measure} (top {TOP_FRACTION:.0%} of words)")
    axes[0].set_ylabel("drop in the predicted label's probability")
    axes[0].legend(loc="lower left")
    axes[1].annotate("lower is better", xy=(0.02, 0.93), xycoords="axes fraction")
    axes[0].annotate("higher is better", xy=(0.02, 0.93), xycoords="axes fraction")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    plt.close(figure)


def run_explain_benchmark(
    datasets: list[str],
    *,
    texts: int = 200,
    variant: str = "plain",
    seed: int = 0,
    plot_path: Path | None = None,
    quiet: bool = False,
) -> dict[str, Any]:
    console = Console(stderr=True, quiet=quiet)
    models_dir = default_models_dir()
    chosen: dict[str, tuple[str, list[str]]] = {}
    for dataset in datasets:
        (stored,) = current_or_trained(dataset, models_dir, [variant], TrainConfig(), console)
        if not stored.has_torch_weights:  # trained before bundles kept them
            train_dataset(dataset, models_dir, [variant], TrainConfig(), console=console)
        test = CLASSIFICATION_DATASETS[dataset]().test
        picked = np.random.default_rng(seed).choice(len(test), size=min(texts, len(test)), replace=False)
        chosen[dataset] = (served_name(dataset, variant), [test[int(i)].text for i in picked])
    flags = ["--models-dir", str(models_dir), "--no-train-default", "--adapt-workers", "0"]
    flags += ["--default-model", next(iter(chosen.values()))[0]]
    reports: dict[str, dict[str, Any]] = {}
    with (
        service_process("earlyexit", flags) as service,
        Progress(*counting_columns(), console=console) as progress,
    ):

        async def measure_all() -> None:
            async with EarlyExitClient(service.address, timeout_s=300) as client:
                for dataset, (model, sample) in chosen.items():
                    task = progress.add_task(f"explaining {dataset} ({model})", total=len(sample))
                    reports[dataset] = {"model": model, "texts": len(sample)} | await _measure(
                        client, model, sample, seed, progress, task
                    )

        asyncio.run(measure_all())
    latencies = [ms for report in reports.values() for ms in report.pop("latencies_ms")]
    if plot_path is not None:
        plot_faithfulness(reports, plot_path)
    ratios = [r["comprehensiveness_over_random"] for r in reports.values()]
    return {
        "comprehensiveness_over_random": {
            name: min(r[name] for r in ratios) for name in ("occlusion", "integrated_gradients")
        },
        "integrated_gradients_over_attention": min(r["integrated_gradients_over_attention"] for r in reports.values()),
        "explain_p50_ms": round(float(np.percentile(latencies, 50)), 1),
        "explain_p99_ms": round(float(np.percentile(latencies, 99)), 1),
        "top_fraction": TOP_FRACTION,
        "ig_steps": DEFAULT_STEPS,
        "datasets": reports,
        "plot": str(plot_path) if plot_path else None,
    }
