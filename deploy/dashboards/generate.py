"""The rosemesh Grafana dashboards, with every PromQL query written once, here.

``python -m deploy.dashboards.generate`` writes one JSON file per dashboard into the Helm chart
(``deploy/helm/rosemesh/dashboards/``), which ships them as ConfigMaps for Grafana's dashboard
sidecar; a test fails when the committed files differ from what this module generates.

The metric names are the ones the services export (``services/runtime/metrics.py``,
``services/common/batching.py``, ``services/common/breaker.py``, and each service's own
metrics); a test scrapes running services and checks every name used below.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

OUTPUT_DIR = Path(__file__).resolve().parents[1] / "helm" / "rosemesh" / "dashboards"

# Exported metric families (prometheus_client adds _bucket/_sum/_count and _total to these).
LATENCY = "rosemesh_grpc_server_handling_seconds"
HANDLED = "rosemesh_grpc_server_handled_total"
IN_FLIGHT = "rosemesh_grpc_server_in_flight"
BATCH_SIZE = "rosemesh_batch_size"
CIRCUIT_STATE = "rosemesh_circuit_state"
EXIT_LAYER = "rosemesh_earlyexit_exit_layer"
EARLYEXIT_TEXTS = "rosemesh_earlyexit_texts_total"
POOL_SIZE = "rosemesh_experience_pool_size"
PARSE_FAILURES = "rosemesh_critique_parse_failures_total"
JUDGEMENTS = "rosemesh_critique_judgements_total"

# Grafana fills these in; a test substitutes them to run the same queries on a real Prometheus.
RATE_WINDOW = "$__rate_interval"
RANGE = "$__range"
GRPC_SELECTOR = 'service=~"$service", grpc_method=~"$method"'
MODEL_SELECTOR = 'model=~"$model"'
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}


def latency_quantile(quantile: float) -> str:
    return (
        f"histogram_quantile({quantile}, sum by (le, service, grpc_method) "
        f"(rate({LATENCY}_bucket{{{GRPC_SELECTOR}}}[{RATE_WINDOW}])))"
    )


def batch_size_quantile(quantile: float) -> str:
    return f"histogram_quantile({quantile}, sum by (le, batcher) (rate({BATCH_SIZE}_bucket[{RATE_WINDOW}])))"


@dataclass(frozen=True)
class Query:
    ref: str
    expr: str
    legend: str


@dataclass(frozen=True)
class Panel:
    title: str
    description: str
    queries: tuple[Query, ...]
    unit: str = "short"
    kind: str = "timeseries"
    width: int = 12
    options: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Variable:
    name: str
    label: str
    metric_selector: str  # label_values(SELECTOR, name)
    label_name: str


@dataclass(frozen=True)
class Dashboard:
    uid: str
    title: str
    description: str
    variables: tuple[Variable, ...]
    panels: tuple[Panel, ...]


LATENCY_DASHBOARD = Dashboard(
    uid="rosemesh-grpc",
    title="rosemesh / gRPC latency and traffic",
    description="Per service and method: latency quantiles, request and error rates, in-flight calls, batching.",
    variables=(
        Variable("service", "Service", HANDLED, "service"),
        Variable("method", "Method", f'{HANDLED}{{service=~"$service"}}', "grpc_method"),
    ),
    panels=(
        Panel(
            "Latency p50 / p95 / p99",
            "Server-side handling time, from the rosemesh_grpc_server_handling_seconds histogram.",
            tuple(
                Query(f"p{round(q * 100)}", latency_quantile(q), f"p{round(q * 100)} {{{{service}}}} {{{{grpc_method}}}}")
                for q in (0.5, 0.95, 0.99)
            ),
            unit="s",
            width=24,
        ),
        Panel(
            "Request rate",
            "Completed calls per second, all status codes.",
            (
                Query(
                    "rate",
                    f"sum by (service, grpc_method) (rate({HANDLED}{{{GRPC_SELECTOR}}}[{RATE_WINDOW}]))",
                    "{{service}} {{grpc_method}}",
                ),
            ),
            unit="reqps",
        ),
        Panel(
            "Error rate by status code",
            "Calls per second that ended with a status other than OK.",
            (
                Query(
                    "errors",
                    f'sum by (service, grpc_method, grpc_code) (rate({HANDLED}{{{GRPC_SELECTOR}, grpc_code!="OK"}}'
                    f"[{RATE_WINDOW}]))",
                    "{{grpc_code}} {{service}} {{grpc_method}}",
                ),
            ),
            unit="reqps",
        ),
        Panel(
            "In-flight calls",
            "Calls being handled right now, summed over replicas.",
            (
                Query(
                    "in_flight",
                    f"sum by (service, grpc_method) ({IN_FLIGHT}{{{GRPC_SELECTOR}}})",
                    "{{service}} {{grpc_method}}",
                ),
            ),
        ),
        Panel(
            "Batch size p50 / p99",
            "Items per batch run by each micro-batcher (embedding's ONNX or Triton batches).",
            (
                Query("batch_p50", batch_size_quantile(0.5), "p50 {{batcher}}"),
                Query("batch_p99", batch_size_quantile(0.99), "p99 {{batcher}}"),
            ),
        ),
    ),
)

SERVICES_DASHBOARD = Dashboard(
    uid="rosemesh-services",
    title="rosemesh / service internals",
    description="Early-exit layers, experience pools per tenant, critique parse failures, circuit breakers.",
    variables=(Variable("model", "Early-exit model", EARLYEXIT_TEXTS, "model"),),
    panels=(
        Panel(
            "Early-exit layer distribution",
            "Texts that exited at each layer over the selected time range (bucket le = layer).",
            (
                Query(
                    "exit_layers",
                    f"sum by (le) (increase({EXIT_LAYER}_bucket{{{MODEL_SELECTOR}}}[{RANGE}]))",
                    "{{le}}",
                ),
            ),
            kind="bargauge",
            options={"displayMode": "gradient", "orientation": "vertical", "reduceOptions": {"calcs": ["lastNotNull"]}},
        ),
        Panel(
            "Early-exit mean layer",
            "Average exit layer per model and mode.",
            (
                Query(
                    "mean_layer",
                    f"sum by (model, mode) (rate({EXIT_LAYER}_sum{{{MODEL_SELECTOR}}}[{RATE_WINDOW}])) / "
                    f"sum by (model, mode) (rate({EXIT_LAYER}_count{{{MODEL_SELECTOR}}}[{RATE_WINDOW}]))",
                    "{{model}} {{mode}}",
                ),
            ),
        ),
        Panel(
            "Experience pool size per tenant",
            "Experiences in each tenant's pool (max over replicas, which share one Qdrant collection).",
            (Query("pool", f"max by (tenant) ({POOL_SIZE})", "{{tenant}}"),),
        ),
        Panel(
            "Critique parse failures",
            "Judge outputs that could not be parsed per second, and as a share of judge calls.",
            (
                Query(
                    "parse_failures",
                    f"sum by (rubric, task) (rate({PARSE_FAILURES}[{RATE_WINDOW}]))",
                    "{{rubric}} {{task}}",
                ),
                Query(
                    "parse_failure_share",
                    f"sum(rate({PARSE_FAILURES}[{RATE_WINDOW}])) / sum(rate({JUDGEMENTS}[{RATE_WINDOW}]))",
                    "share of judge calls",
                ),
            ),
        ),
        Panel(
            "Circuit breakers",
            "0 closed, 1 half-open, 2 open, per backend a service calls.",
            (Query("circuits", f"max by (backend) ({CIRCUIT_STATE})", "{{backend}}"),),
        ),
    ),
)

DASHBOARDS = (LATENCY_DASHBOARD, SERVICES_DASHBOARD)


def _variable_json(variable: Variable) -> dict:
    definition = f"label_values({variable.metric_selector}, {variable.label_name})"
    return {
        "name": variable.name,
        "label": variable.label,
        "type": "query",
        "datasource": DATASOURCE,
        "definition": definition,
        "query": {"query": definition, "refId": variable.name},
        "refresh": 2,
        "includeAll": True,
        "multi": True,
        "allValue": ".*",
        "current": {"text": "All", "value": "$__all"},
        "sort": 1,
    }


def _panel_json(panel: Panel, panel_id: int, x: int, y: int) -> dict:
    return {
        "id": panel_id,
        "type": panel.kind,
        "title": panel.title,
        "description": panel.description,
        "datasource": DATASOURCE,
        "gridPos": {"h": 8, "w": panel.width, "x": x, "y": y},
        "fieldConfig": {"defaults": {"unit": panel.unit}, "overrides": []},
        "options": panel.options,
        "targets": [
            {
                "refId": query.ref,
                "datasource": DATASOURCE,
                "expr": query.expr,
                "legendFormat": query.legend,
                **({"format": "heatmap"} if panel.kind == "bargauge" else {}),
            }
            for query in panel.queries
        ],
    }


def dashboard_json(dashboard: Dashboard) -> dict:
    panels, x, y = [], 0, 0
    for panel_id, panel in enumerate(dashboard.panels, start=1):
        if x + panel.width > 24:
            x, y = 0, y + 8
        panels.append(_panel_json(panel, panel_id, x, y))
        x += panel.width
    datasource_variable = {"name": "datasource", "label": "Data source", "type": "datasource", "query": "prometheus"}
    return {
        "uid": dashboard.uid,
        "title": dashboard.title,
        "description": dashboard.description,
        "tags": ["rosemesh"],
        "timezone": "browser",
        "schemaVersion": 39,
        "version": 1,
        "editable": False,
        "refresh": "30s",
        "time": {"from": "now-1h", "to": "now"},
        "templating": {"list": [datasource_variable, *map(_variable_json, dashboard.variables)]},
        "panels": panels,
    }


def rendered() -> dict[str, str]:
    """File name -> JSON text, for every dashboard."""
    return {f"{d.uid}.json": json.dumps(dashboard_json(d), indent=2) + "\n" for d in DASHBOARDS}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output-dir", type=Path, default=OUTPUT_DIR)
    args = parser.parse_args(argv)
    args.output_dir.mkdir(parents=True, exist_ok=True)
    for name, text in rendered().items():
        (args.output_dir / name).write_text(text)
        print(args.output_dir / name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
