"""Freshness under steady load, on the running stack (`make up`; started here if it is not running).

N customers buy at a steady rate over HTTP for a while. For every purchase we note when its 202 came back,
then watch the API (one polling loop per customer, every WATCH_INTERVAL_S): when it is first listed in
GET /customers/me/purchases, and when GET /customers/me/spend first counts it. One customer's events share a partition and load in order, so a purchase is listed once it
or any later purchase of the same customer is, and counted once the customer's purchase_count reaches it.

Baseline, measured in the same run: the same two times for single purchases on the idle pipeline.
Figures: freshness_list_p95_s, freshness_spend_p95_s (value = p95 under load, seconds).
"""
from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from bench.results import RESULTS_DIR, record

ROOT = Path(__file__).resolve().parents[1]
# How often each customer's list and spend are read. Every read is a request the API serves next to the
# purchases: 50 customers every second saturated the API's one worker and slowed the load it measures.
WATCH_INTERVAL_S = 2.0


@dataclass
class Customer:
    headers: dict
    accepted: list[tuple[str, float]] = field(default_factory=list)  # (event_id, time of the 202)
    listed_at: dict[int, float] = field(default_factory=dict)  # index in accepted -> first seen listed
    counted_at: dict[int, float] = field(default_factory=dict)  # index -> first counted in spend


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


async def sign_up(client: httpx.AsyncClient, run: str, i: int) -> Customer:
    username, password = f"bench_{run}_{i}", f"pw-{uuid.uuid4().hex}"
    (await client.post("/customers", json={"username": username, "password": password})).raise_for_status()
    token = (await client.post("/auth/token", data={"username": username, "password": password})).json()
    return Customer(headers={"Authorization": f"Bearer {token['access_token']}"})


async def buy(client: httpx.AsyncClient, customer: Customer, n: int) -> None:
    body = {"product_name": f"bench item {n}", "quantity": 1 + n % 3, "unit_price": f"{1 + n % 97}.{n % 100:02d}",
            "currency": "USD"}
    answer = await client.post("/purchases", json=body, headers=customer.headers)
    if answer.status_code == 202:
        customer.accepted.append((answer.json()["event_id"], time.monotonic()))


async def watch_customer(client: httpx.AsyncClient, customer: Customer, stop: asyncio.Event, interval: float):
    """Polls one customer's list and spend. Times are taken when the answer arrives: an upper bound on the
    freshness, never an under-estimate. One loop per customer, so a slow answer for one delays no other."""
    while not stop.is_set():
        # Newest first: the newest few are enough, since a purchase counts as listed once a later one is.
        page = await client.get("/customers/me/purchases?limit=5", headers=customer.headers)
        now = time.monotonic()
        if page.status_code == 200:
            seen = {item["event_id"] for item in page.json()["items"]}
            newest = max((i for i, (event_id, _) in enumerate(customer.accepted) if event_id in seen), default=-1)
            for i in range(newest + 1):
                customer.listed_at.setdefault(i, now)
        spend = await client.get("/customers/me/spend", headers=customer.headers)
        now = time.monotonic()
        if spend.status_code == 200:
            count = sum(t["purchase_count"] for t in spend.json()["totals"])
            for i in range(min(count, len(customer.accepted))):
                customer.counted_at.setdefault(i, now)
        await asyncio.sleep(interval)


async def watch(client: httpx.AsyncClient, customers: list[Customer], stop: asyncio.Event, interval: float):
    await asyncio.gather(*(watch_customer(client, customer, stop, interval) for customer in customers))


def delays(customers: list[Customer], which: str) -> tuple[list[float], int]:
    found, missing = [], 0
    for customer in customers:
        seen = getattr(customer, which)
        for i, (_, accepted_at) in enumerate(customer.accepted):
            if i in seen:
                found.append(seen[i] - accepted_at)
            else:
                missing += 1
    return found, missing


async def wait_until_all_seen(customers: list[Customer], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(len(c.listed_at) >= len(c.accepted) and len(c.counted_at) >= len(c.accepted) for c in customers):
            return
        await asyncio.sleep(1)


async def measure(base: str, customers_n: int, rate: float, seconds: float, drain: float, label: str):
    run = uuid.uuid4().hex[:6]
    limits = httpx.Limits(max_connections=128, max_keepalive_connections=128)
    async with httpx.AsyncClient(base_url=base, timeout=30, limits=limits) as client:
        customers = [await sign_up(client, run, i) for i in range(customers_n)]
        stop = asyncio.Event()
        watcher = asyncio.create_task(watch(client, customers, stop, interval=WATCH_INTERVAL_S))
        total = int(rate * seconds)
        started = time.monotonic()
        next_purchase = iter(range(total))

        async def paced_buyer():
            # Purchase n is due at started + n / rate; a free worker takes the next one when it is due.
            for n in next_purchase:
                delay = started + n / rate - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                await buy(client, customers[n % customers_n], n)

        await asyncio.gather(*(paced_buyer() for _ in range(32)))
        sent, sending_s = total, time.monotonic() - started
        await wait_until_all_seen(customers, drain)
        stop.set()
        await watcher
    accepted = sum(len(c.accepted) for c in customers)
    listed, listed_missing = delays(customers, "listed_at")
    counted, counted_missing = delays(customers, "counted_at")
    print(f"{label}: {sent} sent, {accepted} accepted in {sending_s:.0f} s (planned {seconds:.0f} s); "
          f"listed {len(listed)} (missing {listed_missing}), counted {len(counted)} (missing {counted_missing})")
    return listed, counted, listed_missing, counted_missing, accepted, sending_s


def stack_is_up(base: str) -> bool:
    try:
        return httpx.get(base + "/healthz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def summary(values: list[float]) -> dict:
    if not values:
        return {"p50": None, "p95": None, "max": None}
    return {"p50": round(statistics.median(values), 3), "p95": round(percentile(values, 0.95), 3),
            "max": round(max(values), 3)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rate", type=float, default=float(os.environ.get("BENCH_E2E_RATE", 200)))
    parser.add_argument("--customers", type=int, default=int(os.environ.get("BENCH_E2E_CUSTOMERS", 50)))
    parser.add_argument("--seconds", type=float, default=float(os.environ.get("BENCH_E2E_SECONDS", 120)))
    parser.add_argument("--drain", type=float, default=180)
    args = parser.parse_args()
    base = f"http://{os.environ.get('API_HOST', '127.0.0.1')}:{os.environ.get('API_PORT', '8000')}"
    started_here = not stack_is_up(base)
    if started_here:
        subprocess.run(["bash", "-c", "source scripts/env.sh && scripts/up.sh"], cwd=ROOT, check=True)
    try:
        idle_list, idle_spend, *_ = asyncio.run(measure(base, 3, 0.2, 15, args.drain, "idle baseline"))
        listed, counted, listed_missing, counted_missing, accepted, sending_s = asyncio.run(
            measure(base, args.customers, args.rate, args.seconds, args.drain, "under load"))
    finally:
        if started_here:
            subprocess.run(["bash", "-c", "source scripts/env.sh && scripts/down.sh"], cwd=ROOT)
    load = {"rate_per_s": args.rate, "customers": args.customers, "seconds": args.seconds, "accepted": accepted,
            "achieved_rate_per_s": round(accepted / sending_s, 1)}
    samples = RESULTS_DIR / "freshness_samples.csv"
    samples.write_text("kind,seconds\n" + "".join(f"list,{v:.3f}\n" for v in listed)
                       + "".join(f"spend,{v:.3f}\n" for v in counted))
    list_stats, spend_stats = summary(listed), summary(counted)
    record("freshness_list_p95_s", list_stats["p95"], "s", summary(idle_list)["p95"], higher_is_better=False,
           goal=10, p50=list_stats["p50"], max=list_stats["max"], never_listed=listed_missing,
           baseline_is="p95 for single purchases on the idle pipeline", load=load)
    record("freshness_spend_p95_s", spend_stats["p95"], "s", summary(idle_spend)["p95"], higher_is_better=False,
           goal=60, p50=spend_stats["p50"], max=spend_stats["max"], never_counted=counted_missing,
           baseline_is="p95 for single purchases on the idle pipeline", load=load)


if __name__ == "__main__":
    main()
