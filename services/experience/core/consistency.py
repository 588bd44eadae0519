"""Change markers and consistency tokens: how replicas over one shared store agree.

Every write carries a marker, microseconds on the writing replica's clock, strictly increasing
in that replica and, per experience, past the marker the store held before (so the store's
latest version of an experience always has its largest marker, whatever the clocks say).
Replicas' clocks differ, so a catch-up re-reads a window behind the last marker it saw and
applies what it reads idempotently, the larger marker winning.

A token names a write (its tenant, its marker and the experiences it touched). An Orchestrate
that passes one back is answered from a view that includes that write.
"""

from __future__ import annotations

import base64
import binascii
import json
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

#: Experiences named in a token; a bulk write's token names none and is checked by a catch-up.
TOKEN_IDS = 16


class MarkerClock:
    """Markers from a wall clock, strictly increasing in this process."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self._last = 0
        self._lock = threading.Lock()

    def now(self) -> int:
        """The current marker, without taking it."""
        return int(self.clock() * 1_000_000)

    def take(self, after: int = 0) -> int:
        """A fresh marker, larger than every one taken before and than ``after``."""
        with self._lock:
            self._last = max(self._last + 1, self.now(), after + 1)
            return self._last


class TokenError(ValueError):
    """A consistency token this service did not issue, or issued for another tenant."""


@dataclass(frozen=True)
class Token:
    tenant: str
    marker: int  # the largest marker of the write
    experience_ids: tuple[str, ...]  # what it wrote, when few enough to name

    @classmethod
    def of(cls, tenant: str, markers: Sequence[int], experience_ids: Sequence[str]) -> Token:
        ids = tuple(experience_ids) if len(experience_ids) <= TOKEN_IDS else ()
        return cls(tenant, max(markers, default=0), ids)

    @classmethod
    def merge(cls, tokens: Sequence[Token]) -> Token:
        """One token for several writes of one tenant."""
        ids = [eid for t in tokens for eid in t.experience_ids]
        named = all(t.experience_ids for t in tokens) and len(ids) <= TOKEN_IDS
        return cls(tokens[0].tenant, max(t.marker for t in tokens), tuple(dict.fromkeys(ids)) if named else ())

    def encode(self) -> str:
        body = json.dumps([1, self.tenant, self.marker, list(self.experience_ids)], separators=(",", ":"))
        return base64.urlsafe_b64encode(body.encode()).decode().rstrip("=")

    @classmethod
    def decode(cls, text: str, tenant: str) -> Token:
        try:
            body = json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
            version, owner, marker, ids = body
            if version != 1 or not isinstance(marker, int) or not all(isinstance(i, str) for i in ids):
                raise ValueError
        except (binascii.Error, ValueError, TypeError, UnicodeDecodeError) as exc:
            raise TokenError("is not a consistency token this service issued") from exc
        if owner != tenant:
            raise TokenError(f"was issued for another tenant, not {tenant!r}")
        return cls(owner, marker, tuple(ids))
