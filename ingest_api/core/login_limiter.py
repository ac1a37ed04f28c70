"""Counting wrong passwords per username, to refuse password guessing with 429: one limit for every worker.

The counts live in Postgres (app.login_failures, data.py), so API_WORKERS=2 gives the same limit as 1 and
no other server is needed. An attempt is counted as a failure before its password is checked (one upsert
that locks the username's row, so concurrent guesses cannot all slip under the limit); a right password
clears it. At most `max_failures` timestamps are kept per username, and `prune_forever` deletes the
usernames whose newest failure has left the window: the table holds the usernames tried wrongly within the
window, bounded by the guessers' rate (itself bounded by the workers' password-hash capacity) times it.

In front, each worker remembers the lock-outs it learned until they end: a locked username's attempts are
then refused with no database work at all. That memory cannot go stale: while a username is locked, every
attempt is refused, the right password too, so nothing clears it before it ends by itself.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from datetime import timedelta

from psycopg_pool import AsyncConnectionPool

from ingest_api import data

log = logging.getLogger(__name__)


class LoginLimiter:
    def __init__(
        self, pool: AsyncConnectionPool, max_failures: int, window_seconds: float, remembered_lockouts: int = 10_000
    ):
        self.pool = pool
        self.max_failures = max_failures
        self.window = timedelta(seconds=window_seconds)
        self._locked_until: dict[str, float] = {}  # username -> time.monotonic() when its lock-out ends
        self._remembered = remembered_lockouts

    def known_lockout(self, username: str) -> int | None:
        """Seconds until `username` may try again, if this worker knows it is locked out; no database work."""
        until = self._locked_until.get(username)
        if until is None:
            return None
        wait = until - time.monotonic()
        if wait <= 0:
            del self._locked_until[username]
            return None
        return math.ceil(wait)

    async def count_attempt(self, username: str) -> int | None:
        """Counts an attempt as a failure before its password is checked. None: counted, check the password;
        else the seconds until the username may try again (it is locked out; the attempt is not counted)."""
        async with self.pool.connection() as conn:
            if await data.count_login_attempt(conn, username, self.max_failures, self.window):
                return None
            wait = await data.login_retry_after(conn, username, self.max_failures, self.window)
        wait = max(1, math.ceil(wait or 0))
        self._remember_lockout(username, wait)
        return wait

    async def clear(self, username: str) -> None:
        """A right password clears the username's earlier mistakes."""
        async with self.pool.connection() as conn:
            await data.clear_login_failures(conn, username)

    def _remember_lockout(self, username: str, wait: float) -> None:
        now = time.monotonic()
        if len(self._locked_until) >= self._remembered:
            for name in [name for name, until in self._locked_until.items() if until <= now]:
                del self._locked_until[name]
            while len(self._locked_until) >= self._remembered:  # all current: forget the oldest learned
                self._locked_until.pop(next(iter(self._locked_until)))
        self._locked_until[username] = now + wait

    async def prune(self) -> int:
        async with self.pool.connection(timeout=10) as conn:
            return await data.prune_login_failures(conn, self.window)

    async def prune_forever(self, every_seconds: float) -> None:
        """Started in the lifespan of every worker (deleting what is gone twice is harmless)."""
        while True:
            await asyncio.sleep(every_seconds)
            try:
                pruned = await self.prune()
                if pruned:
                    log.info("forgot the login failures of %d usernames (older than %s)", pruned, self.window)
            except Exception as exc:  # noqa: BLE001 - the database may be down: try again next time
                log.warning("could not prune app.login_failures: %s", exc)
