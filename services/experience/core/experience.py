"""The experience pool's domain types, shared by its face, core and backends."""

from __future__ import annotations

import re
import unicodedata
import uuid
from dataclasses import dataclass

from services.experience.core.record import PathSummary

# A fixed namespace so that ids are stable across processes, machines and versions.
EXPERIENCE_NAMESPACE = uuid.UUID("5b0f3a52-6c57-4f4e-9d4e-1c1d2e7c8a90")
_WHITESPACE = re.compile(r"\s+")


def normalise_question(question: str) -> str:
    """NFKC, case-folded, whitespace runs collapsed to one space, trimmed."""
    return _WHITESPACE.sub(" ", unicodedata.normalize("NFKC", question).casefold()).strip()


def experience_id(tenant: str, question: str) -> str:
    """UUIDv5 of tenant and normalised question: re-recording a question hits the same id."""
    return str(uuid.uuid5(EXPERIENCE_NAMESPACE, f"{tenant}\x1f{normalise_question(question)}"))


@dataclass(frozen=True)
class Experience(PathSummary):
    """A recorded question: the vote over its reasoning paths, whose it is, and when."""

    id: str
    tenant: str
    question: str
    create_time: float  # seconds since the epoch
    update_time: float
