"""What can be checked of the image without Docker, and the Prometheus config shipped for local use."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import tomllib

from services.catalog import SERVICES
from tests.deploy.tooling import ROOT, run, tool

DOCKERFILE = (ROOT / "Dockerfile").read_text()


def instructions(name: str) -> list[str]:
    """Arguments of every NAME instruction (continuation lines joined)."""
    joined = DOCKERFILE.replace("\\\n", " ")
    return [line.split(None, 1)[1] for line in joined.splitlines() if line.split(None, 1)[:1] == [name]]


def test_image_is_multi_stage_and_runs_as_a_non_root_user() -> None:
    stages = instructions("FROM")
    assert len(stages) == 2 and stages[0].endswith(" AS build")
    assert instructions("USER") == ["10001:10001"]
    assert "--from=build /opt/rosemesh /opt/rosemesh" in instructions("COPY")


def test_copied_sources_exist_and_are_not_docker_ignored() -> None:
    ignored = {line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines() if line.strip()}
    for arguments in instructions("COPY"):
        if arguments.startswith("--from="):
            continue
        *sources, _destination = shlex.split(arguments)
        for source in sources:
            assert (ROOT / source).exists(), source
            assert source.split("/")[0] not in ignored, source


def test_entrypoint_is_the_rosemesh_console_script_and_the_image_serves_its_service() -> None:
    (entrypoint,) = instructions("ENTRYPOINT")
    (command,) = instructions("CMD")
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert json.loads(entrypoint) == ["rosemesh"] and scripts["rosemesh"] == "services.cli:app"
    assert json.loads(command) == ["serve"]  # the service comes from ROSEMESH_SERVICE (build arg SERVICE)
    assert "ROSEMESH_SERVICE=${SERVICE}" in instructions("ENV")
    for name in SERVICES:  # the chart runs `rosemesh serve <name>` for each
        done = subprocess.run(
            [sys.executable, "-m", "services.cli", "serve", name, "--help"], capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, done.stderr
        assert "--metrics-port" in done.stdout
    # and the image's bare `serve` takes its service from the environment
    done = subprocess.run(
        [sys.executable, "-m", "services.cli", "serve"], capture_output=True, text=True, timeout=120,
        env={**os.environ, "ROSEMESH_SERVICE": "critique", "ROSEMESH_CRITIQUE_PORT": "not-a-port"},
    )  # fmt: skip
    assert done.returncode != 0 and "CritiqueSettings" in done.stderr


def test_one_image_per_service_each_installing_only_its_extra() -> None:
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    makefile = (ROOT / "Makefile").read_text()
    images = dict(pair.split(":") for pair in re.search(r"^IMAGES := (.+)$", makefile, re.M).group(1).split())  # type: ignore[union-attr]
    assert set(images) == set(SERVICES)
    assert images["embedding"] == "embedding" and extras["embedding"] == []  # ONNX Runtime alone
    # A service with a serving extra of its own gets it; the others need the training stack.
    assert all(images[name] == (name if name in extras else "all") for name in SERVICES)
    assert not any("torch" in dependency for name in SERVICES if name in extras for dependency in extras[name])
    assert all(extra in extras for extra in images.values())
    assert any(arg.startswith("EXTRA=") for arg in instructions("ARG"))
    assert any('install ".[${EXTRA}]"' in run_ for run_ in instructions("RUN"))


def test_the_image_checks_its_own_health_without_docker_probes() -> None:
    (check,) = instructions("HEALTHCHECK")
    assert json.loads(check.split("CMD", 1)[1]) == ["rosemesh", "health", "--check", "rosemesh.liveness"]
    done = subprocess.run(  # nothing listens on the port here: the check fails, and says so
        [sys.executable, "-m", "services.cli", "health", "--check", "rosemesh.liveness"],
        capture_output=True, text=True, timeout=60, env={**os.environ, "ROSEMESH_SERVICE": "embedding",
                                                         "ROSEMESH_EMBEDDING_PORT": "1"},
    )  # fmt: skip
    assert done.returncode == 1 and "UNAVAILABLE" in done.stderr


def test_shipped_prometheus_config_passes_promtool() -> None:
    config = ROOT / "deploy" / "prometheus" / "prometheus.yml"
    done = run([tool("promtool"), "check", "config", str(config)])
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout
