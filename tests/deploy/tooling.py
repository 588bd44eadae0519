"""The deployment tools (helm, kubernetes-validate, Prometheus), and rendering the chart with them.

`make tools` installs them (`make test` runs it first), so a missing tool fails the test that needs
it with that hint instead of skipping it.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy" / "helm" / "rosemesh"
PROFILES = ("values.yaml", "values-local.yaml", "values-production.yaml")
RELEASE = "mesh"
KUBERNETES_VERSION = "1.34"


def tool(name: str) -> str:
    """The path of a tool from the virtual environment or PATH; fails the test when it is missing."""
    beside_python = Path(sys.executable).parent / name
    found = str(beside_python) if beside_python.exists() else shutil.which(name)
    if found is None:
        raise AssertionError(f"{name} is not installed: run `make tools`")
    return found


def run(args: list[str], stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, input=stdin, capture_output=True, text=True, timeout=120)


def profile_values(profile: str) -> dict[str, Any]:
    """The chart's defaults with the profile laid over them (as helm merges maps)."""

    def merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
        merged = dict(base)
        for key, value in over.items():
            if isinstance(value, dict) and isinstance(merged.get(key), dict):
                merged[key] = merge(merged[key], value)
            else:
                merged[key] = value
        return merged

    defaults = yaml.safe_load((CHART / "values.yaml").read_text())
    return merge(defaults, yaml.safe_load((CHART / profile).read_text()))


def renderable_chart(destination: Path) -> Path:
    """A copy of the chart that helm renders here: dependencies that cannot be downloaded here
    (the Qdrant chart) are dropped from Chart.yaml, and rendered with their condition off."""
    copy = destination / "rosemesh"
    shutil.copytree(CHART, copy)
    if not (copy / "charts").exists():  # no `helm dependency update` has run here
        chart = yaml.safe_load((copy / "Chart.yaml").read_text())
        chart.pop("dependencies", None)
        (copy / "Chart.yaml").write_text(yaml.safe_dump(chart, sort_keys=False))
    return copy


def offline_overrides(profile: str) -> list[str]:
    """--set flags that turn the Qdrant dependency's condition off for rendering here; the
    experience service then points at the URL, and the API key Secret, that the in-release Qdrant
    cluster would have."""
    qdrant = profile_values(profile)["qdrant"]
    if not qdrant["enabled"]:
        return []
    flags = ["--set", "qdrant.enabled=false", "--set", f"externalQdrant.url=http://{RELEASE}-qdrant:6333"]
    if qdrant.get("apiKey"):  # the key the official chart generates, in the Secret it names so
        flags += ["--set", f"externalQdrant.apiKeySecret.name={RELEASE}-qdrant-apikey"]
        flags += ["--set", "externalQdrant.apiKeySecret.key=api-key"]
    return flags


def helm_args(chart: Path, profile: str) -> list[str]:
    return [str(chart), "-f", str(chart / profile), *offline_overrides(profile)]


def render(chart: Path, profile: str, *extra: str) -> subprocess.CompletedProcess[str]:
    return run([tool("helm"), "template", RELEASE, *helm_args(chart, profile), *extra])


def documents(manifest: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(manifest) if d]
