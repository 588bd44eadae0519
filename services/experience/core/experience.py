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
class ScreenEvidence:
    """What the BadChain screen computed when the record was written, stored with it so that
    replicas read it instead of recomputing it (a model's embedding may differ by a bit between
    machines; the reasoning check costs milliseconds a record)."""

    check: str  # a reasoning_check.Verdict value
    check_detail: str
    #: The content steps' unit embeddings as int8 codes, row-major, ``step_count`` rows.
    step_codes: bytes = b""
    step_count: int = 0


@dataclass(frozen=True)
class Experience(PathSummary):
    """A recorded question: the vote over its reasoning paths, whose it is, and when."""

    id: str
    tenant: str
    question: str
    create_time: float  # seconds since the epoch
    update_time: float
    #: Who recorded it: the writer of the caller's token, "" when authentication is off.
    writer: str = ""
    screen: ScreenEvidence | None = None
