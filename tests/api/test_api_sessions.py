"""Sessions end with a password change: tokens issued before it are refused (401) on every route, the buy
routes too, on every worker within API_SESSION_REVOCATION_REFRESH_SECONDS (+ 1 s here), while a token
issued right after it works. Checked offline: a dict lookup per request, no database read."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid

import httpx
import pytest
from api_support import Api, free_port, sign_up

from ingest_api.accounts.sessions import SessionRevocations
from ingest_api.core.security import InvalidToken, TokenCodec
from purchases.settings import Settings

REFRESH_SECONDS = Settings().session_revocation_refresh_seconds
GOOD = {"product_name": "Tea", "quantity": 1, "unit_price": "3.20"}


@pytest.fixture(scope="module")
def two_workers(api):
    """A second API like `api` (same database and topic) with 2 uvicorn workers: the one that changes the
    password knows at once, the other learns it from its refresh."""
    server = Api(free_port(), dict(api.env, API_WORKERS="2"), api.bootstrap)
    server.start()
    yield server
    server.stop()


def answers(base: str, token: str, rounds: int = 4) -> list[int]:
    """A buy and a read per round, each on a new connection, so that both workers answer."""
    headers = {"Authorization": f"Bearer {token}"}
    statuses = []
    with httpx.Client(base_url=base, timeout=30, limits=httpx.Limits(max_keepalive_connections=0)) as client:
        for _ in range(rounds):
            statuses.append(client.post("/purchases", json=GOOD, headers=headers).status_code)
            statuses.append(client.get("/customers/me/purchases", headers=headers).status_code)
    return statuses


def log_in(base: str, username: str, password: str) -> str:
    answer = httpx.post(f"{base}/auth/token", data={"username": username, "password": password}, timeout=30)
    assert answer.status_code == 200, answer.text
    return answer.json()["access_token"]


def test_a_password_change_ends_the_sessions_before_it_on_every_worker(two_workers):
    base = two_workers.url
    with httpx.Client(base_url=base, timeout=30) as client:
        customer = sign_up(client, "moving")
    old = customer.token
    before = answers(base, old)
    assert before == [202, 200] * 4, before  # remembered by both workers' token caches from now on

    changed = httpx.post(
        f"{base}/customers/me/password",
        headers=customer.headers,
        json={"current_password": customer.password, "new_password": "a-brand-new-password"},
        timeout=30,
    )
    assert changed.status_code == 204, changed.text
    changed_at = time.monotonic()
    # A token issued right after the change (within the same second: iat keeps sub-second precision) works.
    new = log_in(base, customer.username, "a-brand-new-password")
    right_after = answers(base, new, rounds=2)
    assert right_after == [202, 200] * 2, right_after

    # The old one is refused on every worker, cached or not, within the refresh interval. Which worker answers
    # a new connection is up to the kernel: a round answered 401 throughout may have met only the worker that
    # made the change, so the old token is tried until the interval is over, and from some moment on, every
    # answer must be a refusal.
    seen = []
    while time.monotonic() - changed_at < REFRESH_SECONDS + 1:
        seen.append((round(time.monotonic() - changed_at, 2), answers(base, old, rounds=2)))
        time.sleep(0.1)
    accepted_at = [at for at, statuses in seen if set(statuses) != {401}]
    refused_after = next((at for at, _ in seen if not accepted_at or at > accepted_at[-1]), None)
    assert refused_after is not None, (
        f"a token from before the change still worked after {REFRESH_SECONDS + 1} s: {seen}"
    )
    print(f"old token refused everywhere {refused_after:.2f} s after the change")
    later = answers(base, old, rounds=5)
    assert set(later) == {401}, later
    refusal = httpx.post(f"{base}/purchases", json=GOOD, headers={"Authorization": f"Bearer {old}"}, timeout=30)
    assert "password was changed" in refusal.json()["detail"]
    assert refusal.headers["WWW-Authenticate"] == "Bearer"
    still = answers(base, new)
    assert still == [202, 200] * 4, still


# The codec and the refresh, in-process -----------------------------------------------------------------


def test_a_revocation_applies_to_remembered_tokens_and_only_to_earlier_ones():
    codec = TokenCodec("s" * 32, ttl_seconds=3600)
    customer, other = uuid.uuid4(), uuid.uuid4()
    before, others = codec.issue(customer), codec.issue(other)
    assert codec.customer_of(before) == customer  # now remembered
    changed = time.time()
    codec.revoke_issued_before(customer, changed)
    after = codec.issue(customer, issued_at=changed + 0.001)  # a millisecond later: still valid
    with pytest.raises(InvalidToken, match="password was changed"):
        codec.customer_of(before)
    assert codec.customer_of(after) == customer
    assert codec.customer_of(others) == other
    codec.revoke_issued_before(customer, changed - 10)  # an older change read late does not undo the newer
    with pytest.raises(InvalidToken):
        codec.customer_of(before)
    codec.forget_revocations_before(changed + 1)  # what a refresh does once every such token has expired
    assert codec.revocations == 0


def test_without_the_database_the_refresh_logs_and_tokens_keep_working(caplog):
    from psycopg_pool import AsyncConnectionPool

    codec = TokenCodec("s" * 32, ttl_seconds=3600)
    customer = uuid.uuid4()
    token = codec.issue(customer)

    async def run() -> None:
        nowhere = f"postgresql://postgres@127.0.0.1:{free_port()}/nowhere"
        pool = AsyncConnectionPool(nowhere, min_size=1, open=False, timeout=0.5, kwargs={"connect_timeout": 1})
        await pool.open(wait=False)
        refresher = asyncio.create_task(SessionRevocations(pool, codec, every_seconds=0.2).refresh_forever())
        await asyncio.sleep(2.5)
        refresher.cancel()
        await pool.close()

    with caplog.at_level(logging.WARNING, logger="ingest_api.accounts.sessions"):
        asyncio.run(run())
    assert codec.customer_of(token) == customer
    warnings = [record for record in caplog.records if "session revocations not refreshed" in record.message]
    assert len(warnings) == 1  # once when it starts failing, not at every try
