"""Bundles made by one process and loaded by another: where the maker reports its progress,
and how a loading service waits for a bundle with that progress in its status message.

A maker (export or training, run by the CLI or the supervisor as its own process) writes
``.<bundle>.progress.json`` beside the bundle's folder while it works, and removes it once
the bundle is published.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from services.common.model_versions import ModelVersions

#: Set by whoever starts a maker: the file its progress bars are mirrored to.
PROGRESS_FILE_ENV = "ROSEMESH_PROGRESS_FILE"


def progress_file(bundle_dir: Path) -> Path:
    return bundle_dir.parent / f".{bundle_dir.name}.progress.json"


def write_progress(path: Path, message: str) -> None:
    """Atomically, so that a reader never sees half a message."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    temporary.write_text(json.dumps({"message": message, "time": time.time(), "pid": os.getpid()}))
    temporary.replace(path)


def read_progress(path: Path) -> str | None:
    try:
        return str(json.loads(path.read_text())["message"])
    except (OSError, ValueError, KeyError):
        return None


def clear_progress(path: Path) -> None:
    path.unlink(missing_ok=True)


@dataclass(frozen=True)
class Bundle:
    """A bundle a service serves: what it is, where it is published, whether it is there."""

    #: For status messages: "the default early-exit model 'rotten_tomatoes'".
    what: str
    #: The folder it is published to; its progress file sits beside it.
    directory: Path
    present: Callable[[], bool]
    #: How to make it by hand, for when no maker runs.
    hint: str


@dataclass(frozen=True)
class BundleRequest:
    """A bundle a service needs and does not have yet, and the command that makes it."""

    bundle: Bundle
    #: ``rosemesh`` arguments that make it, e.g. ["export", "embedding"].
    command: list[str]
    #: Rough cost on two cores, so that cheap makers run first.
    minutes: float = 1.0
    #: A download waits on the network, not on the cores: it runs beside the other makers.
    downloads: bool = False
    #: Environment the maker needs beyond this process's own.
    env: dict[str, str] = field(default_factory=dict)


async def wait_for_bundle(bundle: Bundle, report: Callable[[str], None], poll_s: float = 0.5) -> None:
    """Return once the bundle is present; meanwhile report the maker's progress, or the hint when
    no maker runs."""
    progress = progress_file(bundle.directory)
    while not bundle.present():
        made = read_progress(progress)
        where = bundle.directory.parent
        report(f"waiting for {bundle.what}: {made}" if made else f"waiting for {bundle.what} in {where}; {bundle.hint}")
        await asyncio.sleep(poll_s)


class PinsVersions(Protocol):
    default_model: str
    model_versions: dict[str, str]


def model_bundle(family: str, label: str, versions: ModelVersions, name: str, settings: PinsVersions) -> Bundle:
    """A versioned model a service waits for: the version its settings pin, or what ``CURRENT`` names."""
    pinned, is_default = settings.model_versions.get(name), name == settings.default_model
    what = f"the {'default ' if is_default else ''}{label} model {name!r}"
    if pinned:
        what = f"version {pinned!r} of {what}"
    hint = f"run `rosemesh train {family} {name}`" + (" or start with --train-default" if is_default else "")
    return Bundle(what, versions.root / name, lambda: versions.resolve(name, pinned) is not None, hint)
