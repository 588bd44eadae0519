"""A circuit breaker per backend, so that a dead backend answers UNAVAILABLE at once.

Closed, it lets calls through and counts consecutive failures (BackendUnavailable, or what the
``is_failure`` predicate says). After ``failure_threshold`` of them it opens: calls fail at once
with CircuitOpen (a BackendUnavailable) for ``reset_timeout_s``. Then it is half-open: one trial
call goes through; its success closes the circuit, its failure opens it again. So a service
recovers by itself when its backend returns, within one reset timeout.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from prometheus_client import Gauge

from services.common.errors import BackendUnavailable

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"
_STATE_VALUE = {CLOSED: 0, HALF_OPEN: 1, OPEN: 2}
CIRCUIT_STATE = Gauge(
    "rosemesh_circuit_state", "Circuit breaker per backend: 0 closed, 1 half-open, 2 open", ["backend"]
)


class CircuitOpen(BackendUnavailable):
    """The backend failed repeatedly; calls fail fast until the next trial."""


class CircuitBreaker:
    def __init__(
        self,
        backend: str,
        *,
        failure_threshold: int = 5,
        reset_timeout_s: float = 2.0,
        is_failure: Callable[[BaseException], bool] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.backend = backend
        self.failure_threshold = failure_threshold
        self.reset_timeout_s = reset_timeout_s
        self.is_failure = is_failure or (lambda exc: isinstance(exc, BackendUnavailable))
        self.clock = clock
        self.failures = 0
        self.opened_at = 0.0
        self.trial_in_flight = False
        self._set(CLOSED)

    def _set(self, state: str) -> None:
        self.state = state
        CIRCUIT_STATE.labels(self.backend).set(_STATE_VALUE[state])

    def admit(self) -> None:
        """Let a call through, or raise CircuitOpen."""
        if self.state == OPEN:
            wait = self.opened_at + self.reset_timeout_s - self.clock()
            if wait > 0:
                raise CircuitOpen(f"{self.backend} is unavailable (circuit open; next trial in {wait:.1f}s)")
            self._set(HALF_OPEN)
        if self.state == HALF_OPEN:
            if self.trial_in_flight:
                raise CircuitOpen(f"{self.backend} is unavailable (circuit half-open; a trial call is running)")
            self.trial_in_flight = True

    def succeeded(self) -> None:
        self.failures = 0
        self.trial_in_flight = False
        if self.state != CLOSED:
            self._set(CLOSED)

    def failed(self) -> None:
        self.failures += 1
        self.trial_in_flight = False
        if self.state == HALF_OPEN or self.failures >= self.failure_threshold:
            self.opened_at = self.clock()
            self._set(OPEN)

    def released(self) -> None:
        """The call ended in a way that says nothing about the backend (the caller cancelled)."""
        self.trial_in_flight = False

    @contextmanager
    def guard(self) -> Iterator[None]:
        """``with breaker.guard(): call the backend`` (works around awaits too)."""
        self.admit()
        try:
            yield
        except BaseException as exc:
            if self.is_failure(exc):
                self.failed()
            elif isinstance(exc, Exception):
                self.succeeded()  # the backend answered, if only to refuse the request
            else:
                self.released()
            raise
        self.succeeded()
