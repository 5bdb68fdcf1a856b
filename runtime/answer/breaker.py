"""Circuit breaker per backend: closed → open after N failures → half-open after a cool-down.

A generator that crashes or times out every time must not cost every visitor
the full deadline: once it has failed ``failure_threshold`` times in a row the
breaker opens and the pipeline goes straight to the fast paths. After
``reset_after_s`` one trial call is let through (half-open); success closes the
breaker, failure opens it again. State changes are counted for /metrics.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Literal

State = Literal["closed", "open", "half-open"]


class CircuitBreaker:
    def __init__(
        self,
        name: str,
        *,
        failure_threshold: int = 3,
        reset_after_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self.failure_threshold = failure_threshold
        self.reset_after_s = reset_after_s
        self._clock = clock
        self._lock = threading.Lock()
        self._state: State = "closed"
        self._failures = 0
        self._opened_at = 0.0
        self._trial_out = False
        self.transitions: dict[str, int] = {"open": 0, "half-open": 0, "closed": 0}
        self.calls = {"allowed": 0, "rejected": 0, "success": 0, "failure": 0}

    @property
    def state(self) -> State:
        with self._lock:
            self._maybe_half_open()
            return self._state

    def _set(self, state: State) -> None:
        if state != self._state:
            self._state = state
            self.transitions[state] += 1

    def _maybe_half_open(self) -> None:
        if self._state == "open" and self._clock() - self._opened_at >= self.reset_after_s:
            self._set("half-open")
            self._trial_out = False

    def allow(self) -> bool:
        """May a call go to the backend now? (Half-open lets exactly one trial through.)"""
        with self._lock:
            self._maybe_half_open()
            if self._state == "closed":
                ok = True
            elif self._state == "half-open" and not self._trial_out:
                self._trial_out = True
                ok = True
            else:
                ok = False
            self.calls["allowed" if ok else "rejected"] += 1
            return ok

    def record_success(self) -> None:
        with self._lock:
            self.calls["success"] += 1
            self._failures = 0
            self._trial_out = False
            self._set("closed")

    def record_failure(self) -> None:
        with self._lock:
            self.calls["failure"] += 1
            self._failures += 1
            self._trial_out = False
            if self._state == "half-open" or self._failures >= self.failure_threshold:
                self._set("open")
                self._opened_at = self._clock()

    def snapshot(self) -> dict[str, object]:
        return {
            "name": self.name,
            "state": self.state,
            "failures": self._failures,
            "transitions": dict(self.transitions),
            "calls": dict(self.calls),
        }
