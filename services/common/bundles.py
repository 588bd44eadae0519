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
class BundleRequest:
    """A bundle a service needs and does not have yet, and the command that makes it."""

    #: What it is, for status messages: "the default early-exit model 'rotten_tomatoes'".
    what: str
    #: The folder it is published to; its progress file sits beside it.
    directory: Path
    #: ``rosemesh`` arguments that make it, e.g. ["export", "embedding", "--models-dir", ...].
    command: list[str]
    #: Rough cost on two cores, so that cheap makers run first.
    minutes: float = 1.0
    #: Environment the maker needs beyond this process's own.
    env: dict[str, str] = field(default_factory=dict)


async def wait_for_bundle(
    present: Callable[[], bool],
    bundle_dir: Path,
    what: str,
    report: Callable[[str], None],
    hint: str,
    poll_s: float = 0.5,
) -> None:
    """Return once ``present()``; meanwhile report the maker's progress, or ``hint`` when no maker runs."""
    progress = progress_file(bundle_dir)
    while not present():
        made = read_progress(progress)
        report(f"waiting for {what}: {made}" if made else f"waiting for {what} in {bundle_dir.parent}; {hint}")
        await asyncio.sleep(poll_s)
