"""The `rosemesh` command."""

from __future__ import annotations

import asyncio
import json
from typing import Annotated

import typer

app = typer.Typer(help="rosemesh: gRPC services for reasoning and NLP features.", no_args_is_help=True)
bench_app = typer.Typer(help="Side-by-side benchmarks that print one JSON object.", no_args_is_help=True)
export_app = typer.Typer(help="Export models into the models directory.", no_args_is_help=True)
app.add_typer(bench_app, name="bench")
app.add_typer(export_app, name="export")

SETTINGS_FLAGS = {"allow_extra_args": True, "ignore_unknown_options": True, "help_option_names": []}


@app.command(context_settings=SETTINGS_FLAGS)
def serve(ctx: typer.Context, service: Annotated[str, typer.Argument(help="service name, e.g. embedding")]) -> None:
    """Run one service in this process. Extra flags are its settings (see `serve SERVICE --help`)."""
    from services.registry import service_class
    from services.runtime.config import load_settings
    from services.runtime.server import serve as run

    try:
        cls = service_class(service)
    except KeyError as exc:
        raise typer.BadParameter(str(exc.args[0]), param_hint="SERVICE") from None
    settings = load_settings(cls.settings_class, list(ctx.args), prog=f"rosemesh serve {service}")
    run(cls(settings), settings)


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

    import grpc

    try:
        asyncio.run(call())
    except grpc.aio.AioRpcError as exc:
        typer.echo(f"error: {exc.code().name}: {exc.details()}", err=True)
        raise typer.Exit(1) from None


@export_app.command("embedding")
def export_embedding(force: Annotated[bool, typer.Option(help="export again even if present")] = False) -> None:
    """Export all-MiniLM-L6-v2 to ONNX (fp32 and int8)."""
    from services.embedding.export import ensure_exported
    from services.embedding.server import EmbeddingSettings
    from services.runtime.config import load_settings

    settings = load_settings(EmbeddingSettings)
    model = ensure_exported(settings.models_dir, force=force)
    typer.echo(str(model.directory))


@bench_app.command("embedding")
def bench_embedding(
    as_json: Annotated[bool, typer.Option("--json", help="print only the JSON object")] = False,
    sentences: Annotated[int, typer.Option(help="real sentences per round")] = 512,
    batch_size: Annotated[int, typer.Option(help="texts per request and per baseline batch")] = 32,
    rounds: Annotated[int, typer.Option(help="alternating rounds of each side")] = 3,
    concurrency: Annotated[int, typer.Option(help="requests in flight through gRPC")] = 16,
) -> None:
    """gRPC embedding service against sentence-transformers in process, same sentences, one run."""
    from services.embedding.bench import run_benchmark

    result = run_benchmark(
        sentences=sentences, batch_size=batch_size, rounds=rounds, concurrency=concurrency, quiet=as_json
    )
    typer.echo(json.dumps(result, indent=None if as_json else 2))


@bench_app.command("experience")
def bench_experience(
    as_json: Annotated[bool, typer.Option("--json", help="print only the JSON object")] = False,
    million: Annotated[bool, typer.Option("--million", help="also measure a pool of 1,000,000")] = False,
    sizes: Annotated[list[int] | None, typer.Option("--size", help="pool sizes (default 10k and 100k)")] = None,
    k: Annotated[int, typer.Option(help="demonstrations per Orchestrate")] = 8,
    queries: Annotated[int, typer.Option(help="held-out questions timed per strategy")] = 200,
) -> None:
    """Orchestrate p50/p99 through gRPC for exact RoSE and the SIMILARITY_TOPK baseline."""
    from services.experience.bench import run_benchmark

    pool_sizes = sizes or [10_000, 100_000]
    if million:
        pool_sizes.append(1_000_000)
    result = run_benchmark(pool_sizes, k=k, queries=queries, quiet=as_json)
    typer.echo(json.dumps(result, indent=None if as_json else 2))


def main() -> None:
    app()


if __name__ == "__main__":
    main()
