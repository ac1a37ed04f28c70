"""Counting wrong passwords per username, to refuse password guessing with 429.

Kept in the process's memory: exact with one uvicorn worker (the default, API_WORKERS=1). With N workers
each counts on its own, so a guesser gets at most N times the limit; put the counts in a shared store
(Postgres, Redis) before running many workers on the internet.
"""

from __future__ import annotations

import time
from collections import deque


class LoginLimiter:
    def __init__(self, max_failures: int, window_seconds: float, max_tracked_usernames: int = 100_000):
        self.max_failures = max_failures
        self.window = window_seconds
        self._failures: dict[str, deque[float]] = {}
        self._max_tracked = max_tracked_usernames

    def _recent(self, username: str, now: float) -> deque[float] | None:
        failures = self._failures.get(username)
        if failures is None:
            return None
        while failures and failures[0] <= now - self.window:
            failures.popleft()
        if not failures:
            del self._failures[username]
            return None
        return failures

    def retry_after(self, username: str) -> int | None:
        """Seconds until `username` may try again, or None if it may try now."""
        now = time.monotonic()
        failures = self._recent(username, now)
        if failures is None or len(failures) < self.max_failures:
            return None
        return max(1, int(failures[0] + self.window - now + 1))

    def record_failure(self, username: str) -> None:
        now = time.monotonic()
        failures = self._recent(username, now)
        if failures is None:
            if len(self._failures) >= self._max_tracked:
                self._forget_expired(now)
            failures = self._failures[username] = deque(maxlen=self.max_failures)
        failures.append(now)

    def reset(self, username: str) -> None:
        """A correct password clears the count of earlier mistakes."""
        self._failures.pop(username, None)

    def _forget_expired(self, now: float) -> None:
        for username in [u for u, f in self._failures.items() if not f or f[-1] <= now - self.window]:
            del self._failures[username]
        while len(self._failures) >= self._max_tracked:  # all recent: drop the oldest-tracked
            self._failures.pop(next(iter(self._failures)))
