"""`rosemesh bench adapters`: tenants' Late Prompt Tuning adapters on one shared backbone against
full fine-tuning (the plain model), side by side in one run, through the real service.

- accuracy: each data set adapted as its own tenant through Adapt (a worker process trains it),
  classified through Classify; full fine-tuning is the served plain model, on the same test texts;
- training: LPT and full fine-tuning on the same examples and epochs, each in a fresh process,
  wall time and peak resident memory above the process's start;
- memory: the serving process with 1, 10 and 100 tenants loaded against one serving one model;
- throughput: three tenants' requests in flight together against the same texts to one model;
- cold start and scheduling: see ``adapters_serving_bench``.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import statistics
import tempfile
import time
from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import asdict
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import Progress
from rosemesh.earlyexit.v1 import earlyexit_pb2 as pb

from services.common import memory
from services.common.progress import counting_columns
from services.earlyexit.client import EarlyExitClient
from services.earlyexit.core.bundle import models_root
from services.earlyexit.offline.adapters_serving_bench import (
    REQUESTS_PER_POINT,
    measure_cold_start,
    measure_scheduling,
    plot_sweep,
    publish_copies,
)
from services.earlyexit.offline.lora import LoraTrainConfig
from services.earlyexit.offline.lpt import LptConfig
from services.earlyexit.offline.train import TrainConfig, served_name, train_dataset
from services.offline.datasets import CLASSIFICATION_DATASETS
from services.runtime.config import default_models_dir
from services.supervisor import RunningService, service_process

DATASETS = ("rotten_tomatoes", "banking77", "clinc150")
METHODS = ("lpt", "lora")
BENCH_TENANT = "bench"
TENANT_COUNTS = (1, 10, 100)


def _bench_models_dir(models_dir: Path, datasets: Sequence[str], scratch: Path) -> Path:
    """A models folder holding only the plain models (what the service loads at start) beside the
    real store's adapters, backbones and jobs (so that trained adapters are reused)."""
    root = scratch / "models"
    (root / "earlyexit").mkdir(parents=True)
    for dataset in datasets:
        name = served_name(dataset, "plain")
        (root / "earlyexit" / name).symlink_to(models_root(models_dir) / name)
    for shared in ("adapters", "backbones", "adapter-jobs"):
        (models_dir / shared).mkdir(parents=True, exist_ok=True)
        (root / shared).symlink_to(models_dir / shared)
    return root


def _resident(service: RunningService) -> int:
    resident = memory.resident_bytes(service.process.pid)
    if resident is None:
        raise RuntimeError("the service's resident memory cannot be read here (no /proc)")
    return resident


def task_name(dataset: str, method: str) -> str:
    return f"{dataset.replace('_', '-')}-{method}"


async def _adapt_all(
    client: EarlyExitClient,
    datasets: Sequence[str],
    methods: Sequence[str],
    lpt: LptConfig,
    lora: LoraTrainConfig,
    progress: Progress,
) -> dict[tuple[str, str], pb.Operation]:
    """Every data set adapted with each method through Adapt; published adapters are reused."""
    operations = {}
    for dataset in datasets:
        for method in methods:
            request = pb.AdaptRequest(
                tenant=BENCH_TENANT, task=task_name(dataset, method), dataset=dataset,
                method=pb.ADAPT_METHOD_LPT if method == "lpt" else pb.ADAPT_METHOD_LORA,
                epochs=lpt.epochs if method == "lpt" else lora.epochs,
            )
            request.lpt.insertion_layer, request.lpt.prompt_length = lpt.insertion_layer, lpt.prompt_length
            request.lpt.generator_size = lpt.generator_size
            request.lora.rank = lora.rank
            request.lora.target_modules.extend(lora.target_modules)
            request.request_id = f"bench-{request.SerializeToString().hex()[:64]}"
            operations[(dataset, method)] = await client.adapt(request)
    bars = {key: progress.add_task(f"adapting {key[0]} ({key[1]})", total=1.0) for key in operations}
    while any(o.state in (pb.OPERATION_STATE_QUEUED, pb.OPERATION_STATE_RUNNING) for o in operations.values()):
        await asyncio.sleep(2.0)
        for key, operation in operations.items():
            operation = operations[key] = await client.get_operation(operation.id)
            progress.update(bars[key], completed=operation.progress, description=f"adapting {key[0]} ({key[1]}): {operation.stage}")
    failed = {f"{d} {m}": o.error for (d, m), o in operations.items() if o.state != pb.OPERATION_STATE_SUCCEEDED}
    if failed:
        raise RuntimeError(f"adapting failed: {failed}")
    return operations


async def _accuracy(client: EarlyExitClient, rows: list[tuple[str, str]], batch: int, **target: str) -> float:
    correct = 0
    for start in range(0, len(rows), batch):
        chunk = rows[start : start + batch]
        texts = [t for t, _ in chunk]
        if "task" in target:
            response = await client.classify_task(texts, target["task"], tenant=BENCH_TENANT)
        else:
            response = await client.classify(texts, model=target["model"])
        correct += sum(r.label == gold for r, (_, gold) in zip(response.results, chunk, strict=True))
    return correct / len(rows)


async def _throughput(client: EarlyExitClient, requests: list[tuple[list[str], dict[str, str]]], concurrency: int) -> float:
    """Texts per second with ``concurrency`` requests in flight."""
    queue = list(requests)
    began = time.perf_counter()

    async def worker() -> None:
        while queue:
            texts, target = queue.pop()
            if "task" in target:
                await client.classify_task(texts, target["task"], tenant=BENCH_TENANT)
            else:
                await client.classify(texts, model=target["model"])

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return sum(len(t) for t, _ in requests) / (time.perf_counter() - began)


async def _resident_with_tenants(
    service: RunningService, models_dir: Path, dataset: str, methods: Sequence[str]
) -> dict[str, int]:
    """The serving process's resident bytes with one model warm, then with 1, 10, 100 LPT tenants,
    then with 100 LoRA tenants more (LoRA's layer graphs load once, with the first of them)."""
    async with EarlyExitClient(service.address, timeout_s=600) as client:
        for _ in range(3):
            await client.classify(["a warm, funny film"] * 32, model=served_name(dataset, "plain"))
        resident = {"one_model": _resident(service)}
        copies = [f"copy-{index}" for index in range(max(TENANT_COUNTS))]
        publish_copies(models_dir, BENCH_TENANT, task_name(dataset, "lpt"), copies)
        loaded = 0
        for count in TENANT_COUNTS:
            for task in copies[loaded:count]:
                await client.classify_task(["a warm, funny film"] * 32, task, tenant=BENCH_TENANT)
            loaded = count
            resident[f"tenants_{count}"] = _resident(service)
        if "lora" in methods:
            lora_copies = [f"lora-copy-{index}" for index in range(max(TENANT_COUNTS))]
            publish_copies(models_dir, BENCH_TENANT, task_name(dataset, "lora"), lora_copies)
            for task in lora_copies:
                await client.classify_task(["a warm, funny film"] * 32, task, tenant=BENCH_TENANT)
            resident["tenants_100_plus_100_lora"] = _resident(service)
    return resident


def _train_in_fresh_process(method: str, dataset: str, examples: int, epochs: float, lpt: dict, results) -> None:
    import torch
    from rich.progress import Progress as Bars

    from services.common.base_model import source_model_dir
    from services.common.tokens import TextEncoder
    from services.earlyexit.backends.torch_model import MultiExitClassifier, load_base_encoder
    from services.earlyexit.offline.lora import LoraClassifier, train_lora
    from services.earlyexit.offline.lpt import LatePromptClassifier, train_late_prompt
    from services.earlyexit.offline.train import MAX_TOKENS, fine_tune

    torch.set_num_threads(os.cpu_count() or 1)
    splits = CLASSIFICATION_DATASETS[dataset]()
    index = {label: i for i, label in enumerate(splits.labels)}
    rows = splits.train[:examples]
    encoded = TextEncoder(source_model_dir() / "tokenizer.json", MAX_TOKENS).encode([r.text for r in rows])
    labels = [index[r.label] for r in rows]
    encoder = load_base_encoder()
    baseline = memory.resident_bytes() or 0
    memory.reset_peak()
    began = time.perf_counter()
    if method == "full":
        model = MultiExitClassifier(encoder, len(splits.labels), every_layer=False)
        with Bars(disable=True) as bars:
            fine_tune(model, encoded, labels, TrainConfig(epochs=epochs), bars, "full")
    elif method == "lora":
        lora_config = LoraTrainConfig(epochs=epochs)
        train_lora(LoraClassifier(encoder, len(splits.labels), lora_config), encoded, labels, lora_config)
    else:
        model = LatePromptClassifier(encoder, len(splits.labels), LptConfig(**lpt, epochs=epochs))
        train_late_prompt(model, encoded, labels, LptConfig(**lpt, epochs=epochs))
    seconds = time.perf_counter() - began
    results.put({"seconds": seconds, "peak_bytes": (memory.peak_bytes() or 0) - baseline})


def measure_training(
    dataset: str, examples: int, epochs: float, lpt: LptConfig, methods: Sequence[str], rounds: int, console: Console
) -> dict[str, Any]:
    """The adapter methods and full fine-tuning, in turn, each in a fresh process on the same examples."""
    context = multiprocessing.get_context("spawn")
    options = {k: v for k, v in asdict(lpt).items() if k in ("insertion_layer", "prompt_length", "generator_size", "lr")}
    runs: dict[str, list[dict]] = {method: [] for method in (*methods, "full")}
    for round_index in range(rounds):
        order = list(runs)
        shift = round_index % len(order)
        for method in order[shift:] + order[:shift]:
            console.log(f"training round {round_index + 1}: {method} on {examples} {dataset} examples, {epochs} epochs")
            results = context.Queue()
            process = context.Process(target=_train_in_fresh_process, args=(method, dataset, examples, epochs, options, results))
            process.start()
            outcome = results.get()
            process.join()
            runs[method].append(outcome)
    seconds = {m: statistics.median(r["seconds"] for r in rs) for m, rs in runs.items()}
    peak = {m: max(r["peak_bytes"] for r in rs) for m, rs in runs.items()}
    report: dict[str, Any] = {"dataset": dataset, "examples": examples, "epochs": epochs, "rounds": rounds}
    for method in runs:
        name = "full_fine_tuning" if method == "full" else method
        report[f"{name}_seconds"], report[f"{name}_peak_bytes"] = round(seconds[method], 1), peak[method]
    for method in methods:
        report[f"{method}_training_speedup"] = round(seconds["full"] / seconds[method], 3)
        report[f"{method}_memory_ratio"] = round(peak[method] / peak["full"], 3)
    return report


PARTS = ("accuracy", "training", "memory", "cold-start", "scheduling")


def run_benchmark(
    datasets: Sequence[str] = DATASETS,
    *,
    texts: int = 1000,
    batch_size: int = 32,
    concurrency: int = 3,
    rounds: int = 3,
    lpt: LptConfig = LptConfig(),
    lora: LoraTrainConfig = LoraTrainConfig(),
    methods: Sequence[str] = METHODS,
    train_examples: int = 2000,
    training_rounds: int = 1,
    parts: Sequence[str] = PARTS,
    slo_requests: int = REQUESTS_PER_POINT,
    plot_path: Path | None = None,
    quiet: bool = False,
) -> dict[str, Any]:
    """``parts``: accuracy (with mixed-tenant throughput), training, memory, cold-start, scheduling;
    the serving parts need LoRA and LPT adapters of the first data set, trained by the accuracy
    part (or an earlier run of it)."""
    console = Console(stderr=True, quiet=quiet)
    models_dir = default_models_dir()
    for dataset in datasets:  # full fine-tuning: the plain model, trained once and reused
        train_dataset(dataset, models_dir, ["plain"], TrainConfig(), console=console)
    test_rows = {}
    for dataset in datasets:
        splits = CLASSIFICATION_DATASETS[dataset]()
        test_rows[dataset] = [(r.text, r.label) for r in splits.test[:texts]]
    report: dict[str, Any] = {"benchmark": "adapters", "parts": list(parts), "methods": list(methods)}
    with tempfile.TemporaryDirectory(prefix="rosemesh-bench-adapters-") as scratch:
        bench_dir = _bench_models_dir(models_dir, datasets, Path(scratch))
        flags = ["--models-dir", str(bench_dir), "--no-train-default", "--default-model", served_name(datasets[0], "plain")]
        flags += ["--batch-size", str(batch_size), "--max-texts", str(batch_size)]
        with Progress(*counting_columns(), console=console) as progress:
            if "accuracy" in parts:
                with service_process("earlyexit", flags) as service:
                    measured = asyncio.run(
                        _accuracy_and_throughput(service, datasets, test_rows, methods, lpt, lora, batch_size, texts, concurrency, rounds, progress)
                    )
                report |= _accuracy_report(measured, lpt, lora, methods, texts, batch_size, concurrency)
            if "memory" in parts:
                memory_dir = _bench_models_dir(models_dir, datasets[:1], Path(scratch) / "memory")
                with service_process("earlyexit", ["--models-dir", str(memory_dir), *flags[2:]]) as service:
                    resident = asyncio.run(_resident_with_tenants(service, memory_dir, datasets[0], methods))
                report |= {"resident_bytes": resident, "memory_ratio_100_tenants": round(resident["tenants_100"] / resident["one_model"], 3)}

            def start(extra: list[str]) -> AbstractContextManager[RunningService]:
                return service_process("earlyexit", [*flags, *extra])

            short = [t for t, _ in test_rows[datasets[0]]]
            if "cold-start" in parts:
                console.log("cold starts: hidden, then load-then-serve")
                cold = measure_cold_start(start, models_dir, BENCH_TENANT, task_name(datasets[0], "lora"), short[:4])
                report |= {"cold_start": cold, **{k: v for k, v in cold.items() if k.startswith("cold_start_p99")}}
            if "scheduling" in parts:
                long = [" ".join(short[i : i + 6]) for i in range(0, len(short) - 6, 6)]
                scheduling = measure_scheduling(
                    start, models_dir, BENCH_TENANT, task_name(datasets[0], "lora"), task_name(datasets[0], "lpt"),
                    short, long, progress, slo_requests,
                )  # fmt: skip
                report |= {"scheduling": scheduling, **{k: v for k, v in scheduling.items() if k.startswith("slo_attainment")}}
                if plot_path is not None:
                    plot_sweep(scheduling, plot_path)
                    report["plot"] = str(plot_path)
    if "training" in parts:
        training = measure_training(datasets[0], train_examples, lpt.epochs, lpt, methods, training_rounds, console)
        report |= {"training": training, "lpt_training_speedup": training.get("lpt_training_speedup"),
                   "lpt_memory_ratio": training.get("lpt_memory_ratio")}  # fmt: skip
    return report


async def _accuracy_and_throughput(
    service: RunningService,
    datasets: Sequence[str],
    test_rows: dict[str, list[tuple[str, str]]],
    methods: Sequence[str],
    lpt: LptConfig,
    lora: LoraTrainConfig,
    batch_size: int,
    texts: int,
    concurrency: int,
    rounds: int,
    progress: Progress,
) -> dict[str, Any]:
    async with EarlyExitClient(service.address, timeout_s=600) as client:
        operations = await _adapt_all(client, datasets, methods, lpt, lora, progress)
        accuracy = {}
        for dataset in datasets:
            rows = test_rows[dataset]
            full = await _accuracy(client, rows, batch_size, model=served_name(dataset, "plain"))
            accuracy[dataset] = {"full_fine_tuning_accuracy": round(full, 4)}
            for method in methods:
                adapted = await _accuracy(client, rows, batch_size, task=task_name(dataset, method))
                accuracy[dataset] |= {
                    f"{method}_accuracy": round(adapted, 4),
                    f"{method}_accuracy_gap_points": round(100 * (full - adapted), 2),
                    f"{method}_dev_accuracy": round(operations[(dataset, method)].dev_accuracy, 4),
                }
        # Throughput: the same texts, one tenant per data set in flight together, or all to one model.
        mixed = [
            ([t for t, _ in test_rows[d][s : s + batch_size]], {"task": task_name(d, methods[0])})
            for s in range(0, texts, batch_size) for d in datasets
        ]
        single = [(t, {"model": served_name(datasets[0], "plain")}) for t, _ in mixed]
        await _throughput(client, mixed[:6], concurrency)  # warm-up
        await _throughput(client, single[:6], concurrency)
        rates: dict[str, list[float]] = {"mixed": [], "single": []}
        for round_index in range(rounds):
            for side in ("mixed", "single") if round_index % 2 == 0 else ("single", "mixed"):
                rates[side].append(await _throughput(client, mixed if side == "mixed" else single, concurrency))
        return {"accuracy": accuracy, "rates": rates}


def _accuracy_report(
    measured: dict[str, Any], lpt: LptConfig, lora: LoraTrainConfig, methods: Sequence[str], texts: int, batch_size: int, concurrency: int
) -> dict[str, Any]:
    rates = measured["rates"]
    mixed_rate, single_rate = statistics.median(rates["mixed"]), statistics.median(rates["single"])
    return {
        "lpt": {k: v for k, v in asdict(lpt).items() if k != "seed"},
        "lora": {"rank": lora.rank, "target_modules": list(lora.target_modules), "epochs": lora.epochs, "lr": lora.lr},
        "test_texts": texts,
        "batch_size": batch_size,
        "concurrency": concurrency,
        "datasets": measured["accuracy"],
        **{
            f"{m}_accuracy_gap_points": {d: a[f"{m}_accuracy_gap_points"] for d, a in measured["accuracy"].items()}
            for m in methods
        },
        "mixed_tenant_texts_per_s": [round(r, 1) for r in rates["mixed"]],
        "single_model_texts_per_s": [round(r, 1) for r in rates["single"]],
        "mixed_tenant_throughput_ratio": round(mixed_rate / single_rate, 3),
    }
