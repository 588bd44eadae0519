"""What the two Qdrant adapters share: the stored form of an experience and the paging rules
of Qdrant's scroll."""

from __future__ import annotations

import base64
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, fields
from typing import Any, TypeVar

import numpy as np

from services.experience.core.experience import Experience, ScreenEvidence

# The tenant key has a payload index (it filters every read); so do the change marker (read
# in order as replicas catch up) and the tombstone flag of a shared store.
TENANT = "tenant"
MARKER = "change"
DELETED = "deleted"

_FIELDS = tuple(f.name for f in fields(Experience) if f.name not in ("id", "writer", "screen"))
_FLOATS = frozenset({"uncertainty", "complexity", "create_time", "update_time"})
_INTS = frozenset({"path_count", "majority_count"})

T = TypeVar("T")


def to_payload(experience: Experience, marker: int) -> dict[str, Any]:
    """Every field but the id, which is the point id, and the write's change marker."""
    payload = asdict(experience)
    del payload["id"]
    if experience.screen is not None:
        payload["screen"]["step_codes"] = base64.b64encode(experience.screen.step_codes).decode("ascii")
    payload[MARKER] = marker
    return payload


def marker_of(payload: Mapping[str, Any]) -> int:
    """The change marker of a stored payload (0 for points written before markers were)."""
    return int(payload.get(MARKER, 0))


def from_payload(point_id: object, payload: Mapping[str, Any]) -> Experience:
    """The experience stored under ``point_id``; payload keys it does not know are ignored."""
    values: dict[str, Any] = {}
    for name in _FIELDS:
        value = payload[name]
        # JSON payloads may hand an integral float back as an int, and the reverse.
        values[name] = float(value) if name in _FLOATS else int(value) if name in _INTS else value
    screen = payload.get("screen")  # absent on points written before the screen stored evidence
    evidence = None
    if screen:
        evidence = ScreenEvidence(
            check=str(screen["check"]),
            check_detail=str(screen["check_detail"]),
            step_codes=base64.b64decode(screen.get("step_codes") or ""),
            step_count=int(screen.get("step_count", 0)),
        )
    return Experience(id=str(point_id), writer=str(payload.get("writer") or ""), screen=evidence, **values)


def point_id(experience_id: str) -> str | None:
    """The canonical point id for ``experience_id``, or None when it is no UUID (so no point has it)."""
    try:
        return str(uuid.UUID(experience_id))
    except ValueError:
        return None


def point_ids(experience_ids: Sequence[str]) -> list[str]:
    """The distinct canonical ids among ``experience_ids``, invalid ones dropped."""
    return list(dict.fromkeys(i for i in map(point_id, experience_ids) if i is not None))


def vector_values(vector: np.ndarray, dimension: int) -> list[float]:
    array = np.asarray(vector, dtype=np.float32)
    if array.shape != (dimension,):
        raise ValueError(f"expected a vector of shape ({dimension},), got {array.shape}")
    return array.tolist()


def page_offset(after_id: str | None) -> str | None:
    """The scroll offset of a page that starts after ``after_id``; None for the first page."""
    offset = None if after_id is None else point_id(after_id)
    if after_id is not None and offset is None:
        raise ValueError(f"after_id {after_id!r} is not an experience id")
    return offset


def page_after(ids_and_items: Sequence[tuple[str, T]], after_id: str | None, limit: int) -> list[T]:
    """Qdrant's scroll offset is inclusive: drop the cursor itself from a page fetched with
    ``limit + 1`` starting at ``after_id``."""
    return [item for point, item in ids_and_items if point != after_id][:limit]


def scroll_pages(fetch: Callable[[Any], tuple[Sequence[T], Any]]) -> Iterator[T]:
    """Follow Qdrant's next-page offsets: ``fetch(offset)`` returns a page and the next offset."""
    offset: Any = None
    while True:
        page, offset = fetch(offset)
        yield from page
        if offset is None:
            return

