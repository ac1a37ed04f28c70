"""Refusing an Idempotency-Key reused with another body, without a database read on the hot path.

Each worker remembers, for every key it sees (bounded: `API_IDEMPOTENCY_CACHE_SIZE` keys, each for
`API_IDEMPOTENCY_CACHE_SECONDS`), the fingerprint of the first request body that came with it
(`purchases.contract.request_fingerprint`: a hash of the request as the contract normalised it). A request
with the same key and the same fingerprint is a retry: the same event id, 202. Another fingerprint is a
conflict: 409, and nothing is produced. The key is taken when the request is about to be produced, before
the broker answers, so two requests racing with one key and different bodies cannot both pass, and a key
whose first request got a 503 still belongs to that body (retry it, or use a new key for a new purchase).

What a worker cannot know (another worker took the key, the API restarted, the key was forgotten) the loader
finds: the fingerprint travels in the event (`request_fingerprint`), and an event id stored already with
another fingerprint is rejected as an idempotency conflict (purchases/load/staging.py).
"""

from __future__ import annotations

import time
from collections import OrderedDict

from fastapi import FastAPI, HTTPException, status

from ingest_api.errors import Problem

IDEMPOTENCY_CONFLICT = {
    409: {
        "model": Problem,
        "description": "The Idempotency-Key was used before with a different body. A retry must send the body "
        "first sent with that key; a new purchase needs a new key.",
    }
}


def idempotency_conflict(idempotency_key: str, what: str = "purchase") -> HTTPException:
    return HTTPException(
        status.HTTP_409_CONFLICT,
        f"Idempotency conflict: the Idempotency-Key {idempotency_key!r} was already used for a {what} with a "
        f"different body. A retry must send the same body as the first request with this key; a new {what} "
        "needs a new key.",
    )


class IdempotencyCache:
    """The request fingerprint first seen with each key, for `seconds`, at most `size` keys (the oldest go
    first). Keys are the event id the Idempotency-Key maps to (for a batch, its first purchase's), so a
    batch's and a single purchase's never share one. Only the event loop's thread touches it."""

    __slots__ = ("size", "seconds", "_seen")

    def __init__(self, size: int, seconds: float):
        self.size = max(0, size)
        self.seconds = seconds
        self._seen: OrderedDict[str, tuple[str, float]] = OrderedDict()  # first use order = expiry order

    def claim(self, key: str, fingerprint: str) -> str:
        """Bind `key` to `fingerprint` unless it is bound already; return the fingerprint it is bound to (the
        given one, or the conflicting one)."""
        seen = self._seen
        now = time.monotonic()
        first = seen.get(key)
        if first is not None:
            if first[1] > now:
                return first[0]
            del seen[key]
        if self.size:
            seen[key] = (fingerprint, now + self.seconds)
            if len(seen) > self.size:
                seen.popitem(last=False)
            # Forget what has expired, a little at a time, so memory follows the traffic down again.
            for _ in range(2):
                if not seen or next(iter(seen.values()))[1] > now:
                    break
                seen.popitem(last=False)
        return fingerprint

    def __len__(self) -> int:
        return len(self._seen)


def cache_of(app: FastAPI) -> IdempotencyCache:
    """The app's cache, made on first use from its settings."""
    cache = getattr(app.state, "idempotency_cache", None)
    if cache is None:
        settings = app.state.settings
        cache = app.state.idempotency_cache = IdempotencyCache(
            settings.idempotency_cache_size, settings.idempotency_cache_seconds
        )
    return cache
