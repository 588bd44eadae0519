"""The dashboards' PromQL against a real Prometheus scraping real services on 127.0.0.1.

A client sends load and times every call itself; the dashboard's own p99 query, run by
Prometheus over the services' histograms, must agree with the client's p99 within the
histogram's bucket resolution. The same run renders docs/dashboard.png (set
ROSEMESH_DASHBOARD_PNG to a path to keep the picture), and a second test checks that every
metric the dashboards name is exported by a running service.
"""

from __future__ import annotations

import asyncio
import bisect
import json
import os
import random
import re
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import matplotlib
import numpy as np
import pytest
import requests
import yaml

from deploy.dashboards.generate import DASHBOARDS, dashboard_json
from services.catalog import SERVICES
from services.common.net import free_port
from services.embedding.client import EmbeddingClient
from services.experience.client import ExperienceClient
from services.runtime.metrics import LATENCY_BUCKETS_S
from services.supervisor import RunningService, service_process
from tests.conftest import EARLYEXIT_MODEL, MULTILABEL_MODEL
from tests.deploy.tooling import ROOT, tool
from tests.helpers import CRITIQUE_WITHOUT_MODELS, scrape

matplotlib.use("Agg")
from matplotlib import pyplot as plt  # noqa: E402  (after choosing the file-only backend)

SCRAPE_INTERVAL_S = 1.0
LOAD_SECONDS = 12.0  # at least this long, and on until every method has MIN_CALLS calls
MIN_CALLS = 150
MAX_LOAD_SECONDS = 120.0  # a slow, shared machine gets longer, not a failure
CONCURRENCY = 4
TENANTS = ("acme", "globex")
EMBED, RECORD, ORCHESTRATE = (
    "/rosemesh.embedding.v1.EmbeddingService/Embed",
    "/rosemesh.experience.v1.ExperienceService/Record",
    "/rosemesh.experience.v1.ExperienceService/Orchestrate",
)
WORDS = "film plot actor scene music story light camera score pacing dialogue ending".split()


def panel_queries() -> dict[str, dict[str, str]]:
    """{panel title: {refId: expr}} over every shipped dashboard."""
    return {
        panel["title"]: {target["refId"]: target["expr"] for target in panel["targets"]}
        for dashboard in DASHBOARDS
        for panel in dashboard_json(dashboard)["panels"]
    }


def variable_queries() -> list[str]:
    return [v["query"]["query"] for d in DASHBOARDS for v in dashboard_json(d)["templating"]["list"] if v["type"] == "query"]


def as_promql(expr: str, window: str) -> str:
    """A dashboard query with Grafana's variables filled in as the 'All' selection would."""
    for variable, value in {"$__rate_interval": window, "$__range": window}.items():
        expr = expr.replace(variable, value)
    return re.sub(r"\$[a-z_]+", ".*", expr)


class Prometheus:
    """A real Prometheus on 127.0.0.1, scraping the given jobs every second."""

    def __init__(self, jobs: dict[str, str], directory: Path) -> None:
        shipped = yaml.safe_load((ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text())
        shipped["global"]["scrape_interval"] = f"{SCRAPE_INTERVAL_S:g}s"
        shipped["scrape_configs"] = [
            {**job, "static_configs": [{"targets": [jobs[job["job_name"]]]}]}
            for job in shipped["scrape_configs"] if job["job_name"] in jobs
        ]
        config = directory / "prometheus.yml"
        config.write_text(yaml.safe_dump(shipped))
        self.url = f"http://127.0.0.1:{free_port()}"
        self.log = (directory / "prometheus.log").open("w")
        self.process = subprocess.Popen(
            [
                tool("prometheus"), f"--config.file={config}", f"--storage.tsdb.path={directory / 'data'}",
                f"--web.listen-address={self.url.removeprefix('http://')}",
            ],
            stdout=self.log, stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 60
        while not self._ready():
            assert self.process.poll() is None, (directory / "prometheus.log").read_text()
            assert time.monotonic() < deadline, "Prometheus not ready after 60 s"
            time.sleep(0.2)

    def _ready(self) -> bool:
        try:
            return requests.get(f"{self.url}/-/ready", timeout=2).status_code == 200
        except requests.ConnectionError:
            return False

    def query(self, promql: str, at: float | None = None) -> list[dict]:
        params = {"query": promql, **({"time": f"{at:.3f}"} if at is not None else {})}
        answer = requests.get(f"{self.url}/api/v1/query", params=params, timeout=10).json()
        assert answer["status"] == "success", (promql, answer)
        return answer["data"]["result"]

    def query_range(self, promql: str, start: float, end: float, step_s: float) -> list[dict]:
        params = {"query": promql, "start": f"{start:.3f}", "end": f"{end:.3f}", "step": f"{step_s:g}"}
        answer = requests.get(f"{self.url}/api/v1/query_range", params=params, timeout=10).json()
        assert answer["status"] == "success", (promql, answer)
        return answer["data"]["result"]

    def wait_for(self, promql: str, until: callable, timeout_s: float = 30) -> list[dict]:
        deadline = time.monotonic() + timeout_s
        while True:
            result = self.query(promql)
            if until(result):
                return result
            assert time.monotonic() < deadline, f"Prometheus never showed what was expected of {promql}: {result}"
            time.sleep(0.25)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)
        self.log.close()


def count_series(method: str) -> str:
    return f'rosemesh_grpc_server_handling_seconds_count{{grpc_method="{method}"}}'


def served_count(service: RunningService, method: str) -> float:
    samples = scrape(service)["rosemesh_grpc_server_handling_seconds"]
    return sum(s.value for s in samples if s.name.endswith("_count") and s.labels["grpc_method"] == method)


def wait_until_scraped(prometheus: Prometheus, service: RunningService, method: str) -> float:
    """Until Prometheus holds the service's current call count for METHOD; returns when it did."""
    expected = served_count(service, method)
    prometheus.wait_for(count_series(method), lambda r: bool(r) and float(r[0]["value"][1]) == expected)
    return time.time()


@dataclass
class Timings:
    """The client's own latencies per method, in seconds."""

    seconds: dict[str, list[float]] = field(default_factory=dict)

    async def timed(self, method: str, call: object) -> None:
        start = time.perf_counter()
        try:
            await call
        except grpc.aio.AioRpcError:
            pass  # failed calls are timed too: the server's histogram counts them
        finally:
            self.seconds.setdefault(method, []).append(time.perf_counter() - start)

    def keep_loading(self, methods: tuple[str, ...], started: float, seconds: float) -> bool:
        elapsed = time.monotonic() - started
        enough = all(len(self.seconds.get(method, ())) >= MIN_CALLS for method in methods)
        return elapsed < seconds or (not enough and elapsed < MAX_LOAD_SECONDS)


async def embed_load(client: EmbeddingClient, timings: Timings, seconds: float) -> None:
    rng = random.Random(7)

    started = time.monotonic()

    async def worker() -> None:
        while timings.keep_loading((EMBED,), started, seconds):
            size = rng.choice((1, 2, 4, 8, 16, 32, 64))
            texts = [" ".join(rng.choices(WORDS, k=rng.randint(3, 40))) for _ in range(size)]
            if rng.random() < 0.03:
                texts = [""]  # INVALID_ARGUMENT, for the error panel
            await timings.timed(EMBED, client.embed(texts))

    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))


def reasoning_paths(rng: random.Random) -> list[tuple[str, str]]:
    paths = []
    for _ in range(rng.randint(1, 5)):
        answer = rng.choice("ABCDE")
        steps = [f"Step {i + 1}: weigh the {rng.choice(WORDS)}." for i in range(rng.randint(1, 5))]
        paths.append(("\n".join([*steps, f"So the answer is {answer}."]), answer))
    return paths


async def experience_load(clients: list[ExperienceClient], timings: Timings, seconds: float) -> None:
    rng = random.Random(11)

    started = time.monotonic()

    async def worker() -> None:
        while timings.keep_loading((RECORD, ORCHESTRATE), started, seconds):
            client = rng.choice(clients)
            question = f"Which {rng.choice(WORDS)} makes the {rng.choice(WORDS)} work? {rng.randint(0, 10**6)}"
            if rng.random() < 0.4:
                await timings.timed(RECORD, client.record(question, reasoning_paths(rng)))
            else:
                await timings.timed(ORCHESTRATE, client.orchestrate(question, k=rng.choice((2, 4, 8))))

    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))


@dataclass
class LoadRun:
    prometheus: Prometheus
    timings: Timings
    # Per method: when Prometheus held the final counts, and the window that covers its load.
    evaluated_at: dict[str, float]
    window_s: dict[str, int]
    started: float
    finished: float


@pytest.fixture(scope="module")
def load_run(embedding_model: object, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LoadRun]:
    directory = tmp_path_factory.mktemp("prometheus")
    with (
        service_process("embedding", ["--no-fast", "--max-texts", "64"]) as embedding,
        service_process(
            "experience", ["--embedding-target", embedding.address, "--data-dir", str(directory / "pool")]
        ) as experience,
    ):
        metrics_address = {s.name: f"127.0.0.1:{s.settings.metrics_port}" for s in (embedding, experience)}
        prometheus = Prometheus(metrics_address, directory)
        try:
            yield asyncio.run(drive_load(prometheus, embedding, experience))
        finally:
            prometheus.stop()


async def drive_load(prometheus: Prometheus, embedding: RunningService, experience: RunningService) -> LoadRun:
    timings = Timings()
    evaluated_at, window_s = {}, {}
    started = time.time()
    async with EmbeddingClient(embedding.address, timeout_s=30, max_attempts=1) as client:
        await client.embed(["warm-up"])  # the series exists before the timed load starts
        first_seen = wait_until_scraped(prometheus, embedding, EMBED)
        await embed_load(client, timings, LOAD_SECONDS)
        evaluated_at[EMBED] = wait_until_scraped(prometheus, embedding, EMBED)
        window_s[EMBED] = int(evaluated_at[EMBED] - first_seen + 2 * SCRAPE_INTERVAL_S) + 1

    clients = [ExperienceClient(experience.address, tenant, timeout_s=30, max_attempts=1) for tenant in TENANTS]
    rng = random.Random(3)
    for client in clients:  # a few experiences in each pool, and both series, before the timed load
        for i in range(8):
            await client.record(f"Seed question {i} for {client.tenant}?", reasoning_paths(rng))
        await client.orchestrate("warm-up question?", k=2)
    first_seen = max(wait_until_scraped(prometheus, experience, m) for m in (RECORD, ORCHESTRATE))
    await experience_load(clients, timings, LOAD_SECONDS)
    for method in (RECORD, ORCHESTRATE):
        evaluated_at[method] = wait_until_scraped(prometheus, experience, method)
        window_s[method] = int(evaluated_at[method] - first_seen + 2 * SCRAPE_INTERVAL_S) + 1
    for client in clients:
        await client.close()
    time.sleep(3 * SCRAPE_INTERVAL_S)  # the idle tail shows on the picture
    return LoadRun(prometheus, timings, evaluated_at, window_s, started, time.time())


def bucket_index(seconds: float) -> int:
    """Index of the histogram bucket holding SECONDS (upper bounds are inclusive, as `le` says)."""
    return bisect.bisect_left(LATENCY_BUCKETS_S, seconds)


@pytest.mark.parametrize("method", [EMBED, RECORD, ORCHESTRATE])
def test_dashboard_p99_agrees_with_the_client_within_bucket_resolution(load_run: LoadRun, method: str) -> None:
    client_seconds = load_run.timings.seconds[method]
    assert len(client_seconds) >= 100, f"too few calls of {method} for a p99: {len(client_seconds)}"
    client_p99 = float(np.percentile(client_seconds, 99))
    p99_query = as_promql(panel_queries()["Latency p50 / p95 / p99"]["p99"], f"{load_run.window_s[method]}s")
    result = load_run.prometheus.query(p99_query, at=load_run.evaluated_at[method])
    (series,) = [r for r in result if r["metric"]["grpc_method"] == method]
    dashboard_p99 = float(series["value"][1])
    # The server's histogram times the handler; the client adds the network and (de)serialisation,
    # so its p99 sits in the same bucket as the dashboard's or in the next one up.
    client_bucket, dashboard_bucket = bucket_index(client_p99), bucket_index(dashboard_p99)
    report = f"{method}: client p99 {client_p99 * 1e3:.2f} ms, dashboard p99 {dashboard_p99 * 1e3:.2f} ms"
    assert dashboard_bucket in (client_bucket, client_bucket - 1), report
    assert dashboard_p99 <= LATENCY_BUCKETS_S[client_bucket], report


def test_every_dashboard_query_runs_on_prometheus_and_the_traffic_panels_show_data(load_run: LoadRun) -> None:
    window = f"{max(load_run.window_s.values())}s"
    at = max(load_run.evaluated_at.values())
    for title, queries in panel_queries().items():
        for ref, expr in queries.items():
            result = load_run.prometheus.query(as_promql(expr, window), at=at)  # a syntax error fails here
            if title in ("Latency p50 / p95 / p99", "Request rate", "Batch size p50 / p99", "In-flight calls"):
                assert result, (title, ref)
    errors = load_run.prometheus.query(as_promql(panel_queries()["Error rate by status code"]["errors"], window), at=at)
    assert {r["metric"]["grpc_code"] for r in errors} == {"INVALID_ARGUMENT"}
    pool = load_run.prometheus.query(as_promql(panel_queries()["Experience pool size per tenant"]["pool"], window))
    assert {r["metric"]["tenant"] for r in pool} == set(TENANTS)


def test_dashboard_picture_from_the_collected_query_results(load_run: LoadRun, tmp_path: Path) -> None:
    queries = panel_queries()
    start, end = load_run.started, load_run.finished

    def series(title: str, ref: str) -> list[dict]:
        return load_run.prometheus.query_range(as_promql(queries[title][ref], "5s"), start, end, SCRAPE_INTERVAL_S)

    figure, axes = plt.subplots(2, 3, figsize=(16, 8.5), constrained_layout=True)
    figure.suptitle("rosemesh dashboards, from Prometheus during the load test (embedding + experience, 127.0.0.1)")
    short = {EMBED: "Embed", RECORD: "Record", ORCHESTRATE: "Orchestrate"}
    panels = [
        ("Latency p50 / p95 / p99", ("p50", "p95", "p99"), "ms", 1e3,
         lambda m, ref: f"{ref} {short.get(m.get('grpc_method'), m.get('grpc_method'))}"),
        ("Request rate", ("rate",), "calls/s", 1, lambda m, ref: short.get(m["grpc_method"], m["grpc_method"])),
        ("Error rate by status code", ("errors",), "calls/s", 1,
         lambda m, ref: f"{m['grpc_code']} {short.get(m['grpc_method'], m['grpc_method'])}"),
        ("In-flight calls", ("in_flight",), "calls", 1, lambda m, ref: short.get(m["grpc_method"], m["grpc_method"])),
        ("Batch size p50 / p99", ("batch_p50", "batch_p99"), "texts", 1, lambda m, ref: f"{ref[6:]} {m['batcher']}"),
        ("Experience pool size per tenant", ("pool",), "experiences", 1, lambda m, ref: m["tenant"]),
    ]
    drawn = 0
    for axis, (title, refs, unit, scale, label) in zip(axes.flat, panels, strict=True):
        for ref in refs:
            for line in series(title, ref):
                points = [(float(t) - start, float(v) * scale) for t, v in line["values"] if v not in ("NaN", "+Inf")]
                if points:
                    axis.plot(*zip(*points, strict=True), label=label(line["metric"], ref), linewidth=1.2)
                    drawn += 1
        axis.set_title(title)
        axis.set_xlabel("seconds since start")
        axis.set_ylabel(unit)
        axis.grid(alpha=0.3)
        if axis.lines:
            axis.legend(fontsize=7, loc="upper left")
    assert drawn >= 10
    picture = Path(os.environ.get("ROSEMESH_DASHBOARD_PNG") or tmp_path / "dashboard.png")
    figure.savefig(picture, dpi=90)
    plt.close(figure)
    assert picture.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# --- every metric the dashboards name is exported by a running service -----------------------

PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless", "offset"}
SUFFIXES = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_sum", "_count", "_created"), "gauge": ("",)}


def metric_names(expr: str) -> set[str]:
    """Metric names in a PromQL expression (or a Grafana label_values(SELECTOR, label) query)."""
    expr = re.sub(r"^label_values\((.*),\s*\w+\)$", r"\1", expr)
    expr = re.sub(r'"[^"]*"', "", expr)  # strings
    expr = re.sub(r"\{[^}]*\}|\[[^\]]*\]", " ", expr)  # label matchers, ranges
    expr = re.sub(r"\b(by|without)\s*\([^)]*\)", " ", expr)  # grouping labels
    words = [
        m.group() for m in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", expr)
        if not expr[m.end():].lstrip().startswith("(")  # a function
    ]
    return {w for w in words if w not in PROMQL_WORDS}


def exported_series(service: RunningService) -> set[str]:
    """Every series name SERVICE's /metrics serves now or will serve once a label set is used."""
    url = f"http://{service.settings.host}:{service.settings.metrics_port}/metrics"
    text = requests.get(url, timeout=10).text
    families = dict(re.findall(r"^# TYPE (\S+) (\S+)$", text, flags=re.MULTILINE))
    names = {line.split("{")[0].split(" ")[0] for line in text.splitlines() if line and not line.startswith("#")}
    for family, kind in families.items():  # an unused counter's TYPE line already says _total
        base = family.removesuffix("_total") if kind == "counter" else family
        names.update(base + suffix for suffix in SUFFIXES.get(kind, ("",)))
    return names


def test_every_metric_the_dashboards_name_is_exported_by_a_running_service(
    embedding_model: object,
    earlyexit_models_dir: Path,
    multilabel_trained: tuple[Path, object],
    tmp_path: Path,
) -> None:
    queries = [expr for panel in panel_queries().values() for expr in panel.values()] + variable_queries()
    named = {expr: metric_names(expr) for expr in queries}
    assert all(named.values()), [q for q, names in named.items() if not names]
    exported: set[str] = set()
    with service_process("embedding", ["--no-fast"]) as embedding:
        flags = {
            "embedding": None,
            "experience": ["--embedding-target", embedding.address, "--data-dir", str(tmp_path / "pool")],
            "earlyexit": ["--models-dir", str(earlyexit_models_dir), "--no-train-default",
                          "--default-model", EARLYEXIT_MODEL],
            "multilabel": ["--embedding-target", embedding.address, "--models-dir", str(multilabel_trained[0]),
                           "--no-train-default", "--default-model", MULTILABEL_MODEL],
            "critique": ["--embedding-target", embedding.address, *CRITIQUE_WITHOUT_MODELS],
        }
        assert set(flags) == set(SERVICES), "a new service: start it here so its metrics are checked"
        exported |= exported_series(embedding)
        for name, service_flags in flags.items():
            if service_flags is not None:
                with service_process(name, service_flags) as service:
                    exported |= exported_series(service)
    missing = {expr: names - exported for expr, names in named.items() if names - exported}
    assert not missing, json.dumps({k: sorted(v) for k, v in missing.items()}, indent=1)
