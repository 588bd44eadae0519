"""Helpers shared by integration tests."""

from __future__ import annotations

import subprocess
import sys
import sysconfig
from pathlib import Path

import numpy
import requests
from prometheus_client.parser import text_string_to_metric_families

from services.supervisor import RunningService


def scrape(service: RunningService) -> dict[str, list]:
    """The service's /metrics, as {family name: samples}."""
    url = f"http://{service.settings.host}:{service.settings.metrics_port}/metrics"
    text = requests.get(url, timeout=10).text
    return {family.name: family.samples for family in text_string_to_metric_families(text)}


def isolated_environment(root: Path, packages: tuple[str, ...] = ("numpy",)) -> Path:
    """A virtual environment of this Python holding only ``packages`` (linked in from this
    environment) and nothing of rosemesh: where a stock Triton image's python models run."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root)], check=True)
    site = Path(sysconfig.get_paths(vars={"base": str(root), "platbase": str(root)})["purelib"])
    ours = Path(numpy.__file__).resolve().parents[1]
    for package in packages:
        for found in ours.glob(f"{package}*"):
            if found.name in (package, f"{package}.libs") or found.name.startswith(f"{package}-"):
                (site / found.name).symlink_to(found)
    return root


#: A critique service for tests that do not measure its judge: no judge download (judged calls
#: answer UNAVAILABLE with the reason) and no reward model trained first.
CRITIQUE_WITHOUT_MODELS = ["--no-fetch-local-model", "--no-train-reward-model"]
