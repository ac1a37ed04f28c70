"""A password change ends the sessions before it, on every worker within API_SESSION_REVOCATION_REFRESH_SECONDS.

Tokens are checked offline (core/security.py), with no database read per request, and that stays so: each
worker keeps, in its TokenCodec, customer -> "tokens issued before this are revoked", and refreshes it every
few seconds with one query of the customers whose password changed since the last refresh (the partial
index on app.customers.password_changed_at makes it a range scan of a few rows). The worker that made the
change knows it at once. The buy routes get the check through `customer_for_token` (deps.py) like every
other route.

If a refresh fails (the database is down), the map is kept as it is and tokens keep working as before:
buying needs no database. It is logged when it starts failing and when it works again; the next refresh
that succeeds catches up, as it asks for every change since the last one that succeeded.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import UTC, datetime, timedelta

from psycopg_pool import AsyncConnectionPool

from ingest_api import data
from ingest_api.core.security import TokenCodec

log = logging.getLogger(__name__)

# Each refresh asks again for the changes of this long before the previous one started. password_changed_at
# comes from the clock of the API worker that made the change, taken before its update committed, so a
# change may become visible a little after the time it carries (its update's duration, or the clocks of
# two API hosts differing). Re-reading a minute of changes costs a few index entries.
OVERLAP = timedelta(seconds=60)


class SessionRevocations:
    def __init__(self, pool: AsyncConnectionPool, tokens: TokenCodec, every_seconds: float):
        self.pool = pool
        self.tokens = tokens
        self.every_seconds = every_seconds
        # At start, every change that can still matter: a token issued before an older one has expired.
        self._since = datetime.now(UTC) - timedelta(seconds=tokens.ttl_seconds)
        self._failing_since: float | None = None

    async def refresh(self) -> int:
        """One query; notes each change in the TokenCodec. Returns how many changes it read."""
        started = datetime.now(UTC)
        async with self.pool.connection(timeout=max(1.0, self.every_seconds)) as conn:
            changes = await data.password_changes_since(conn, self._since)
        for customer_id, changed_at in changes:
            self.tokens.revoke_issued_before(customer_id, changed_at.timestamp())
        self._since = started - OVERLAP
        self.tokens.forget_revocations_before(time.time() - self.tokens.ttl_seconds)
        return len(changes)

    async def refresh_forever(self) -> None:
        """Started in the lifespan of every worker; the first refresh at once, then one every `every_seconds`
        from the start of the previous (its own duration does not add up to the delay)."""
        while True:
            started = time.monotonic()
            try:
                await self.refresh()
            except Exception as exc:  # noqa: BLE001 - the database may be down: tokens keep working, try again
                if self._failing_since is None:
                    self._failing_since = time.monotonic()
                    log.warning(
                        "session revocations not refreshed (%s: %s): tokens keep working, but a password changed "
                        "meanwhile on another worker does not end its earlier sessions here until a refresh works",
                        type(exc).__name__,
                        exc,
                    )
            else:
                if self._failing_since is not None:
                    log.warning(
                        "session revocations refreshed again after %.0f s", time.monotonic() - self._failing_since
                    )
                    self._failing_since = None
            await asyncio.sleep(max(0.0, started + self.every_seconds - time.monotonic()))
