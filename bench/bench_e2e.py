"""Freshness under steady load, on the running stack (`make up`; started here if it is not running).

N customers buy at a steady rate over HTTP for a while. For every purchase we note when its 202 came back,
then watch the API (one polling loop per customer, every WATCH_INTERVAL_S): when it is first listed in
GET /customers/me/purchases, and when GET /customers/me/spend first counts it. One customer's events share a
partition and load in order, so a purchase is listed once it or any later purchase of the same customer is, and
counted once the customer's purchase_count reaches it.

Baseline, measured in the same run: the same two times for single purchases on the idle pipeline.
Figures: freshness_list_p95_s, freshness_spend_p95_s (value = p95 under load, seconds).
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import queue
import statistics
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
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


def http_session(base: str, connections: int) -> aiohttp.ClientSession:
    """aiohttp, not httpx, for the load: measured here, httpx spent 6.8 ms of CPU per request with 32 in
    flight and aiohttp 0.37 ms. With httpx the load generator, not the pipeline, set the pace (~90/s)."""
    return aiohttp.ClientSession(
        base, connector=aiohttp.TCPConnector(limit=connections), timeout=aiohttp.ClientTimeout(total=30)
    )


async def sign_up(client: httpx.AsyncClient, run: str, i: int) -> Customer:
    username, password = f"bench_{run}_{i}", f"pw-{uuid.uuid4().hex}"
    (await client.post("/customers", json={"username": username, "password": password})).raise_for_status()
    token = (await client.post("/auth/token", data={"username": username, "password": password})).json()
    return Customer(headers={"Authorization": f"Bearer {token['access_token']}"})


async def buy(client: aiohttp.ClientSession, customer: Customer, n: int) -> None:
    body = {
        "product_name": f"bench item {n}",
        "quantity": 1 + n % 3,
        "unit_price": f"{1 + n % 97}.{n % 100:02d}",
        "currency": "USD",
    }
    async with client.post("/purchases", json=body, headers=customer.headers) as answer:
        if answer.status == 202:
            customer.accepted.append(((await answer.json())["event_id"], time.monotonic()))


async def get_json(client: aiohttp.ClientSession, path: str, headers: dict) -> tuple[dict | None, float]:
    """The answer's JSON (None unless 200) and the time it arrived."""
    async with client.get(path, headers=headers) as answer:
        body = await answer.json() if answer.status == 200 else None
    return body, time.monotonic()


async def watch_customer(
    client: aiohttp.ClientSession, headers: dict, expected: dict, interval: float, observed: dict
) -> None:
    """Polls one customer's list and spend, noting each change with the time its answer arrived (an upper
    bound on the freshness, never an under-estimate). Ends once the customer's last purchase is listed and
    all are counted (known when `expected` is filled in after the load), or at the drain deadline."""
    last_ids, last_count = None, None
    while True:
        # Newest first: the newest few are enough, since a purchase counts as listed once a later one is.
        page, now = await get_json(client, "/customers/me/purchases?limit=5", headers)
        ids = tuple(item["event_id"] for item in page["items"]) if page else last_ids
        if ids != last_ids:
            observed["listed"].append((now, ids))
            last_ids = ids
        spend, now = await get_json(client, "/customers/me/spend", headers)
        count = sum(t["purchase_count"] for t in spend["totals"]) if spend else last_count
        if count != last_count:
            observed["counted"].append((now, count))
            last_count = count
        if "total" in expected:
            all_listed = expected["total"] == 0 or expected["last_event_id"] in (last_ids or ())
            if (all_listed and (last_count or 0) >= expected["total"]) or now > expected["deadline"]:
                return
        await asyncio.sleep(interval)


async def _watch_all(
    base: str, headers: list[dict], interval: float, drain: float, expected_queue, result_queue
) -> None:
    expected = [{} for _ in headers]
    observed = [{"listed": [], "counted": []} for _ in headers]

    async def learn_what_to_expect():
        while True:
            try:
                final = expected_queue.get_nowait()
            except queue.Empty:
                await asyncio.sleep(0.5)
                continue
            deadline = time.monotonic() + drain
            for slot, (last_event_id, total) in zip(expected, final, strict=True):
                slot.update(last_event_id=last_event_id, total=total, deadline=deadline)
            return

    async with http_session(base, connections=len(headers)) as client:
        await asyncio.gather(
            learn_what_to_expect(),
            *(watch_customer(client, h, e, interval, o) for h, e, o in zip(headers, expected, observed, strict=True)),
        )
    result_queue.put(observed)


def watcher_process(
    base: str, headers: list[dict], interval: float, drain: float, expected_queue, result_queue
) -> None:
    asyncio.run(_watch_all(base, headers, interval, drain, expected_queue, result_queue))


def first_seen(customer: Customer, observed: dict) -> None:
    """listed_at / counted_at of each accepted purchase, from the watcher's timeline of changes."""
    index = {event_id: i for i, (event_id, _) in enumerate(customer.accepted)}
    newest = -1
    for seen_at, ids in observed["listed"]:
        top = max((index[e] for e in ids if e in index), default=-1)
        while newest < top:
            newest += 1
            customer.listed_at[newest] = seen_at
    counted = 0
    for seen_at, count in observed["counted"]:
        while counted < min(count, len(customer.accepted)):
            customer.counted_at[counted] = seen_at
            counted += 1


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


async def sign_up_all(base: str, run: str, n: int) -> list[Customer]:
    async with httpx.AsyncClient(base_url=base, timeout=30) as client:
        return [await sign_up(client, run, i) for i in range(n)]


async def buy_at_rate(base: str, customers: list[Customer], rate: float, seconds: float) -> float:
    """32 workers send purchase n at started + n / rate (as soon as possible when late). Returns how long it
    took: with the pipeline sharing the cores, the achieved rate can fall short of the planned one."""
    async with http_session(base, connections=64) as client:
        started = time.monotonic()
        next_purchase = iter(range(int(rate * seconds)))

        async def paced_buyer():
            for n in next_purchase:
                delay = started + n / rate - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                await buy(client, customers[n % len(customers)], n)

        await asyncio.gather(*(paced_buyer() for _ in range(32)))
        return time.monotonic() - started


def measure(base: str, customers_n: int, rate: float, seconds: float, drain: float, label: str):
    """The watcher runs in a process of its own, so that polling never delays the paced purchases."""
    customers = asyncio.run(sign_up_all(base, uuid.uuid4().hex[:6], customers_n))
    context = multiprocessing.get_context("spawn")
    expected_queue, result_queue = context.Queue(), context.Queue()
    watcher = context.Process(
        target=watcher_process,
        args=(base, [c.headers for c in customers], WATCH_INTERVAL_S, drain, expected_queue, result_queue),
    )
    watcher.start()
    try:
        sending_s = asyncio.run(buy_at_rate(base, customers, rate, seconds))
        expected_queue.put([(c.accepted[-1][0] if c.accepted else None, len(c.accepted)) for c in customers])
        observed = result_queue.get(timeout=drain + 120)
    finally:
        watcher.join(timeout=30)
        if watcher.is_alive():
            watcher.kill()
    for customer, timeline in zip(customers, observed, strict=True):
        first_seen(customer, timeline)
    sent = int(rate * seconds)
    accepted = sum(len(c.accepted) for c in customers)
    listed, listed_missing = delays(customers, "listed_at")
    counted, counted_missing = delays(customers, "counted_at")
    print(
        f"{label}: {sent} sent, {accepted} accepted in {sending_s:.0f} s (planned {seconds:.0f} s); "
        f"listed {len(listed)} (missing {listed_missing}), counted {len(counted)} (missing {counted_missing})"
    )
    return listed, counted, listed_missing, counted_missing, accepted, sending_s


def stack_is_up(base: str) -> bool:
    try:
        return httpx.get(base + "/healthz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def summary(values: list[float]) -> dict:
    if not values:
        return {"p50": None, "p95": None, "max": None}
    return {
        "p50": round(statistics.median(values), 3),
        "p95": round(percentile(values, 0.95), 3),
        "max": round(max(values), 3),
    }


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
        idle_list, idle_spend, *_ = measure(base, 3, 0.2, 15, args.drain, "idle baseline")
        listed, counted, listed_missing, counted_missing, accepted, sending_s = measure(
            base, args.customers, args.rate, args.seconds, args.drain, "under load"
        )
    finally:
        if started_here:
            subprocess.run(["bash", "-c", "source scripts/env.sh && scripts/down.sh"], cwd=ROOT)
    load = {
        "rate_per_s": args.rate,
        "customers": args.customers,
        "seconds": args.seconds,
        "accepted": accepted,
        "achieved_rate_per_s": round(accepted / sending_s, 1),
    }
    samples = RESULTS_DIR / "freshness_samples.csv"
    samples.write_text(
        "kind,seconds\n" + "".join(f"list,{v:.3f}\n" for v in listed) + "".join(f"spend,{v:.3f}\n" for v in counted)
    )
    list_stats, spend_stats = summary(listed), summary(counted)
    record(
        "freshness_list_p95_s",
        list_stats["p95"],
        "s",
        summary(idle_list)["p95"],
        higher_is_better=False,
        goal=10,
        p50=list_stats["p50"],
        max=list_stats["max"],
        never_listed=listed_missing,
        baseline_is="p95 for single purchases on the idle pipeline",
        load=load,
    )
    record(
        "freshness_spend_p95_s",
        spend_stats["p95"],
        "s",
        summary(idle_spend)["p95"],
        higher_is_better=False,
        goal=60,
        p50=spend_stats["p50"],
        max=spend_stats["max"],
        never_counted=counted_missing,
        baseline_is="p95 for single purchases on the idle pipeline",
        load=load,
    )


if __name__ == "__main__":
    main()
