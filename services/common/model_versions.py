"""Versioned, immutable model bundles in a directory every pod mounts (a shared volume, or the
local cache), and the served generation a reload swaps.

Layout, under one service family's root (``<models_dir>/earlyexit``, say)::

    <name>/<version>/   a published version: written aside, renamed into place, never changed
    <name>/CURRENT      the version to serve unless a service pins another; replaced in one step

A publisher writes into a hidden staging folder beside the versions and renames it in only when
every file is on disk, so a reader, which lists only renamed-in folders, never sees half a
version, even when the publisher is killed midway: what it leaves behind is a staging folder
that the next publish of that model clears.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Generic, TypeVar

POINTER = "CURRENT"
_STAGING = ".staging-"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
#: A staging folder this old belongs to a publisher that died.
ABANDONED_AFTER_S = 6 * 3600


class VersionExists(FileExistsError):
    """Published versions are immutable: the same name and version cannot be published twice."""


def check_name(kind: str, value: str) -> str:
    if not _NAME.match(value):
        raise ValueError(f"{kind} {value!r} must be 1-128 letters, digits, '.', '_' or '-', not starting with a dot")
    return value


def _fsync(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


class ModelVersions:
    """The published versions of one family's models, and the pointer to each one's current."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def names(self) -> list[str]:
        """Models with a current version."""
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and self.current(p.name) is not None)

    def versions(self, name: str) -> list[str]:
        folder = self.root / name
        if not folder.is_dir():
            return []
        return sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))

    def path(self, name: str, version: str) -> Path:
        return self.root / check_name("model", name) / check_name("version", version)

    def is_published(self, name: str, version: str) -> bool:
        return self.path(name, version).is_dir()

    def current(self, name: str) -> str | None:
        """The version the pointer names, if it is published."""
        try:
            version = (self.root / name / POINTER).read_text(encoding="utf-8").strip()
        except OSError:
            return None
        return version if version and self.is_published(name, version) else None

    def resolve(self, name: str, pinned: str | None = None) -> str | None:
        """The version to serve: the pinned one, else the current one; None while not published."""
        if pinned:
            return pinned if self.is_published(name, pinned) else None
        return self.current(name)

    def point(self, name: str, version: str) -> None:
        """Make ``version`` current, in one step (also a rollback: point at an older version)."""
        if not self.is_published(name, version):
            raise FileNotFoundError(f"model {name!r} has no published version {version!r}")
        folder = self.root / name
        temporary = folder / f".{POINTER}.{uuid.uuid4().hex}"
        temporary.write_text(version + "\n", encoding="utf-8")
        _fsync(temporary)
        temporary.replace(folder / POINTER)
        _fsync(folder)

    @contextmanager
    def publish(self, name: str, version: str, *, make_current: bool = True) -> Iterator[Path]:
        """Yield a staging folder to write ``version`` into; on a clean exit it is published (and
        made current), on an error it is removed."""
        target = self.path(name, version)
        if target.exists():
            raise VersionExists(f"model {name!r} already has a published version {version!r}")
        folder = target.parent
        folder.mkdir(parents=True, exist_ok=True)
        self._clear_abandoned(folder)
        staging = folder / f"{_STAGING}{version}-{uuid.uuid4().hex}"
        staging.mkdir()
        try:
            yield staging
            for path in staging.rglob("*"):
                if path.is_file():
                    _fsync(path)
            _fsync(staging)
            if target.exists():  # another publisher got there first
                raise VersionExists(f"model {name!r} already has a published version {version!r}")
            staging.rename(target)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        _fsync(folder)
        if make_current:
            self.point(name, version)

    @staticmethod
    def _clear_abandoned(folder: Path) -> None:
        cutoff = time.time() - ABANDONED_AFTER_S
        for path in folder.glob(f"{_STAGING}*"):
            try:
                if path.stat().st_mtime < cutoff:
                    shutil.rmtree(path, ignore_errors=True)
            except FileNotFoundError:
                pass


T = TypeVar("T")


class Generation(Generic[T]):
    """What a service answers with (its loaded models), swapped whole on reload. A call holds the
    generation it began on, so in-flight calls finish on the old one, which is closed after them."""

    def __init__(self, value: T, close: Callable[[T], Awaitable[None]]) -> None:
        self._value = value
        self._close = close
        self._calls: dict[int, int] = {}
        self._idle: dict[int, asyncio.Event] = {}

    @property
    def value(self) -> T:
        return self._value

    @asynccontextmanager
    async def use(self) -> AsyncIterator[T]:
        value = self._value
        key = id(value)
        self._calls[key] = self._calls.get(key, 0) + 1
        try:
            yield value
        finally:
            self._calls[key] -= 1
            if self._calls[key] == 0:
                del self._calls[key]
                if key in self._idle:
                    self._idle.pop(key).set()

    async def swap(self, value: T) -> None:
        """Serve ``value`` from now on; return once the calls on the old value end and it is closed."""
        old, self._value = self._value, value
        key = id(old)
        if self._calls.get(key):
            idle = self._idle.setdefault(key, asyncio.Event())
            await idle.wait()
        await self._close(old)

    async def close(self) -> None:
        await self._close(self._value)
