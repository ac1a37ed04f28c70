"""Password guessing at scale: the real API under uvicorn with 2 workers, on real Postgres.

* A flood of wrong-password logins (400 connections, random usernames, no pause, Retry-After ignored, as an
  attacker sends them) does not starve a signed-in customer's reads and buys: each still answers normally
  and fast, and the logins beyond the workers' password-hash capacity are refused at once with
  503 + Retry-After (or 429). Reported before: reads took ~5 s (waiting for a pooled connection that
  password hashing held) and some answered 503.
* The wrong-password limit is one for both workers: API_LOGIN_MAX_FAILURES wrong passwords in total lock
  the username out, however the attempts are spread over the workers and however concurrent they are.
"""

from __future__ import annotations

import asyncio
import json
import uuid

import httpx
import psycopg
import pytest
from api_support import Api, free_port, sign_up

from bench import login_flood
from purchases.settings import Settings

WORKERS = 2
FLOOD_CONNECTIONS = 400
FLOOD_SECONDS = 15.0
MAX_FAILURES = Settings().login_max_failures


@pytest.fixture(scope="module")
def two_workers(api):
    """A second API like `api` (same database and topic) with 2 uvicorn workers ($WEB_CONCURRENCY is
    uvicorn's default for --workers)."""
    server = Api(free_port(), dict(api.env, API_WORKERS=str(WORKERS)), api.bootstrap)
    server.start()
    yield server
    server.stop()


@pytest.mark.slow
def test_a_login_flood_does_not_starve_reads_and_buys(two_workers):
    with httpx.Client(base_url=two_workers.url, timeout=30) as client:
        customer = sign_up(client, "flooded")
    figures = login_flood.measure(two_workers.url, customer.headers, FLOOD_CONNECTIONS, FLOOD_SECONDS)
    print("login flood:", json.dumps(figures, indent=1))

    reads, buys, logins = figures["flood"]["reads"], figures["flood"]["buys"], figures["logins"]
    # The customer is served normally throughout: every read 200, every buy 202, none waiting seconds. The
    # bounds leave room for a busy shared machine (measured on 2 shared cores, 5 runs: reads p95 105-253 ms,
    # max 145-468 ms; 4-8 ms without the flood) yet catch what was reported, and what the code before this
    # did here: reads waiting ~4.9 s for a pooled connection (the pool's timeout is 5 s), 3 reads in 11 s.
    assert reads["statuses"] == [200] and buys["statuses"] == [202], figures
    assert reads["n"] >= 10, figures
    assert reads["p95_ms"] < 1000 and buys["p95_ms"] < 1000, figures
    assert reads["max_ms"] < 3000 and buys["max_ms"] < 3000, figures

    answers = {int(status): count for status, count in logins["answers"].items()}
    # Wrong passwords of random usernames: 401 when checked, 503 when the hashing was full; nothing else.
    assert set(answers) <= {401, 429, 503}, figures
    assert answers.get(401, 0) > 0 and answers.get(503, 0) > answers.get(401, 0), figures
    assert logins["missing_retry_after"] == 0 and logins["connection_errors"] == 0, figures
    # Refused at once, without the database: quick even on a saturated machine (measured: p95 0.39-0.58 s
    # with 1,100-1,800 refusals a second; before, they were 503s from the pool's 5 s timeout, p50 5.2 s).
    assert logins["latency_s"][503]["p95"] < 2.0, figures


# One limit for both workers --------------------------------------------------------------------------


def log_in_on_new_connection(base: str, username: str, password: str) -> httpx.Response:
    """A fresh connection each time, so that the attempts are spread over the workers."""
    return httpx.post(f"{base}/auth/token", data={"username": username, "password": password}, timeout=30)


async def concurrent_logins(base: str, username: str, password: str, n: int) -> list[int]:
    limits = httpx.Limits(max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=base, timeout=30, limits=limits) as client:
        answers = await asyncio.gather(
            *(client.post("/auth/token", data={"username": username, "password": password}) for _ in range(n))
        )
    return [answer.status_code for answer in answers]


def recent_failures(dsn: str, username: str) -> int:
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            "select cardinality(failed_at) from app.login_failures where username = %s", (username,)
        ).fetchone()
    return row[0] if row else 0


def test_the_limit_is_one_for_all_workers_even_for_concurrent_guesses(two_workers, api_dsn):
    with httpx.Client(base_url=two_workers.url, timeout=30) as client:
        customer = sign_up(client, "guessed")
    # 12 guesses at once (fewer than one worker may queue: none is refused for being busy): exactly the
    # limit of them is checked (401), the others are refused (429), spread over the workers as they come.
    statuses = asyncio.run(concurrent_logins(two_workers.url, customer.username, "wrong-guess", 12))
    assert sorted(statuses) == [401] * MAX_FAILURES + [429] * (12 - MAX_FAILURES), statuses
    assert recent_failures(api_dsn, customer.username) == MAX_FAILURES  # bounded: never more are kept
    # Locked out on every worker, even with the right password.
    for _ in range(8):
        locked = log_in_on_new_connection(two_workers.url, customer.username, customer.password)
        assert locked.status_code == 429 and int(locked.headers["Retry-After"]) > 0


def test_wrong_passwords_on_either_worker_add_up(two_workers, api_dsn):
    with httpx.Client(base_url=two_workers.url, timeout=30) as client:
        customer = sign_up(client, "spread")
    for _ in range(MAX_FAILURES - 1):
        assert log_in_on_new_connection(two_workers.url, customer.username, "wrong-guess").status_code == 401
    # A right password clears the count, wherever it is checked.
    assert log_in_on_new_connection(two_workers.url, customer.username, customer.password).status_code == 200
    assert recent_failures(api_dsn, customer.username) == 0
    for _ in range(MAX_FAILURES):
        assert log_in_on_new_connection(two_workers.url, customer.username, "wrong-guess").status_code == 401
    for _ in range(8):
        assert log_in_on_new_connection(two_workers.url, customer.username, customer.password).status_code == 429
    # Another username is not affected.
    assert log_in_on_new_connection(two_workers.url, f"nobody_{uuid.uuid4().hex[:8]}", "wrong").status_code == 401
