"""Progress bars for long offline work that a waiting service can also read.

``MirroredProgress`` is rich's ``Progress``; when the process was started with
``ROSEMESH_PROGRESS_FILE`` set, its updates are also written there (a new step at once, a count
at most twice a second), so that a service waiting for the bundle shows the same progress in its
status message.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path
from typing import Any

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)

from services.common.bundles import PROGRESS_FILE_ENV, write_progress

_INTERVAL_S = 0.5


def counting_columns() -> tuple[ProgressColumn, ...]:
    """The columns of a bar that counts steps: what, the bar, done/total, time taken."""
    return (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())


def _duration(seconds: float) -> str:
    return f"{seconds / 60:.0f} min" if seconds >= 90 else f"{seconds:.0f} s"


class MirroredProgress(Progress):
    def __init__(self, *columns: Any, **options: Any) -> None:
        super().__init__(*columns, **options)
        target = os.environ.get(PROGRESS_FILE_ENV)
        self._mirror = Path(target) if target else None
        self._mirrored = ("", 0.0)  # the kind of the last message written, and when

    def _write_mirror(self, task_id: TaskID) -> None:
        """Written at once when the description changes in more than its numbers, else at most
        every ``_INTERVAL_S``."""
        task = self._tasks.get(task_id)
        if self._mirror is None or task is None:
            return
        kind, now = re.sub(r"[\d.]+", "#", task.description), time.monotonic()
        if kind == self._mirrored[0] and now - self._mirrored[1] < _INTERVAL_S:
            return
        self._mirrored = (kind, now)
        done = f" {task.completed:.0f}/{task.total:.0f} ({task.percentage:.0f}%)" if task.total else ""
        left = task.time_remaining
        if left is not None and task.total and not task.finished:
            done += f", about {_duration(left)} left"
        write_progress(self._mirror, f"{task.description}{done}")

    def add_task(self, description: str, *args: Any, **kwargs: Any) -> TaskID:
        task_id = super().add_task(description, *args, **kwargs)
        self._write_mirror(task_id)
        return task_id

    def update(self, task_id: TaskID, *args: Any, **kwargs: Any) -> None:
        super().update(task_id, *args, **kwargs)
        self._write_mirror(task_id)

    def advance(self, task_id: TaskID, advance: float = 1) -> None:
        super().advance(task_id, advance)
        self._write_mirror(task_id)
