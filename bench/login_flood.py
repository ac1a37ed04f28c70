"""A flood of wrong-password logins beside one signed-in customer's reads and buys: what both see.

Used by the login-flood test (tests/api/test_api_login_under_attack.py, which asserts the customer is served
normally) and by `make bench-ingest` (which reports the figure). The flood runs in a process of its own, so
that the load generator's CPU never delays the customer's requests measured here (nor the other way round),
with aiohttp: ~0.4 ms of CPU per request, where httpx spent ~7 ms (tests/test_soak.py, bench/bench_e2e.py).
"""

from __future__ import annotations

import asyncio
import multiprocessing
import secrets
import statistics
import time

import httpx

GOOD = {"product_name": "Tea", "quantity": 1, "unit_price": "3.20"}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


# The flood --------------------------------------------------------------------------------------------


async def _flood(base: str, connections: int, seconds: float, started) -> dict:
    import aiohttp

    answers: dict[int, list[float]] = {}
    missing_retry_after = errors = 0
    async with aiohttp.ClientSession(
        base, connector=aiohttp.TCPConnector(limit=connections), timeout=aiohttp.ClientTimeout(total=30)
    ) as client:
        deadline = time.monotonic() + seconds

        async def guesser():
            nonlocal missing_retry_after, errors
            while time.monotonic() < deadline:
                form = {"username": f"u{secrets.token_hex(6)}", "password": secrets.token_urlsafe(12)}
                sent = time.monotonic()
                try:
                    async with client.post("/auth/token", data=form) as answer:
                        await answer.read()
                        status, retry_after = answer.status, answer.headers.get("Retry-After")
                except (TimeoutError, aiohttp.ClientError):
                    errors += 1
                    continue
                answers.setdefault(status, []).append(time.monotonic() - sent)
                if status in (429, 503) and not (retry_after and retry_after.isdigit() and int(retry_after) > 0):
                    missing_retry_after += 1

        started.set()
        await asyncio.gather(*(guesser() for _ in range(connections)))
    return {
        "answers": {status: len(latencies) for status, latencies in answers.items()},
        "latency_s": {
            status: {"p50": percentile(lat, 0.5), "p95": percentile(lat, 0.95), "max": max(lat)}
            for status, lat in answers.items()
        },
        "missing_retry_after": missing_retry_after,
        "connection_errors": errors,
    }


def flood_process(base: str, connections: int, seconds: float, started, results) -> None:
    results.put(asyncio.run(_flood(base, connections, seconds, started)))


# The customer, meanwhile -------------------------------------------------------------------------------


def customer_traffic(base: str, headers: dict, until: float) -> dict:
    """Reads GET /customers/me/purchases and buys, one after the other, each on a new connection (so that
    both workers serve them), until `until`. Returns every answer's status and time."""
    reads, buys = [], []
    limits = httpx.Limits(max_keepalive_connections=0)
    with httpx.Client(base_url=base, timeout=30, limits=limits) as client:
        while time.monotonic() < until:
            sent = time.monotonic()
            answer = client.get("/customers/me/purchases?limit=20", headers=headers)
            reads.append((answer.status_code, time.monotonic() - sent))
            sent = time.monotonic()
            answer = client.post("/purchases", json=GOOD, headers=headers)
            buys.append((answer.status_code, time.monotonic() - sent))
            time.sleep(0.05)
    return {"reads": reads, "buys": buys}


def summary(timed: list[tuple[int, float]]) -> dict:
    latencies = [seconds for _, seconds in timed]
    return {
        "n": len(timed),
        "statuses": sorted({status for status, _ in timed}),
        "p50_ms": round(1000 * statistics.median(latencies), 1),
        "p95_ms": round(1000 * percentile(latencies, 0.95), 1),
        "max_ms": round(1000 * max(latencies), 1),
    }


def measure(base: str, headers: dict, connections: int, seconds: float) -> dict:
    """The customer's reads and buys for 3 s alone, then during `seconds` of a flood over `connections`
    connections; and what the flood's logins were answered."""
    quiet = customer_traffic(base, headers, time.monotonic() + 3)
    context = multiprocessing.get_context("spawn")
    started, results = context.Event(), context.Queue()
    flood = context.Process(target=flood_process, args=(base, connections, seconds, started, results))
    flood.start()
    try:
        if not started.wait(30):
            raise RuntimeError("the flood did not start")
        time.sleep(2)  # its connections open and the queues fill
        during = customer_traffic(base, headers, time.monotonic() + seconds - 4)
        logins = results.get(timeout=seconds + 60)
    finally:
        flood.join(30)
        if flood.is_alive():
            flood.kill()
    return {
        "quiet": {"reads": summary(quiet["reads"]), "buys": summary(quiet["buys"])},
        "flood": {"reads": summary(during["reads"]), "buys": summary(during["buys"])},
        "logins": logins,
    }
