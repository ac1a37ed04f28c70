"""Freshness under steady load, on the running stack (`make up`; started here if it is not running).

N customers buy at a steady rate over HTTP for a while, at each rate of BENCH_E2E_RATES (200 and 1000
purchases/s). For every purchase we note when its 202 came back, then watch (in a process of its own):

- the API, one polling loop per customer every WATCH_INTERVAL_S: when the purchase is first listed in
  GET /customers/me/purchases, and when GET /customers/me/spend first counts it;
- the warehouse, one query for all the customers every MARTS_INTERVAL_S: when marts.customer_spend (what
  Grafana and the alert rules read) first counts it.

One customer's events share a partition and load in order, so a purchase is listed once it or any later
purchase of the same customer is, and counted once the customer's purchase_count reaches it. Every time is
the arrival of the answer that first showed it: an upper bound on the freshness, never an under-estimate.

Baseline, measured in the same run: the same times for single purchases on the idle pipeline. Figures per
rate: freshness_{list,spend,marts}_p95_s (200/s) and the same with `_high_rate` (the higher rate), value =
p95 under load, seconds; p50, max, the achieved rate and the load average with them. Plots: the
distribution of each delay at each rate (freshness.png).
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
# How often each customer's list and spend are read: every read is a request the API serves next to the
# purchases (50 customers every second is 100 requests/s), and the interval is the measurement's resolution.
WATCH_INTERVAL_S = 1.0
# How often marts.customer_spend is read for all the customers at once (one indexed query).
MARTS_INTERVAL_S = 1.0


@dataclass
class Customer:
    headers: dict
    customer_id: str = ""
    accepted: list[tuple[str, float]] = field(default_factory=list)  # (event_id, time of the 202)
    listed_at: dict[int, float] = field(default_factory=dict)  # index in accepted -> first seen listed
    counted_at: dict[int, float] = field(default_factory=dict)  # index -> first counted in the API's spend
    in_marts_at: dict[int, float] = field(default_factory=dict)  # index -> first counted in marts.customer_spend


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
    created = await client.post("/customers", json={"username": username, "password": password})
    created.raise_for_status()
    token = (await client.post("/auth/token", data={"username": username, "password": password})).json()
    return Customer(
        headers={"Authorization": f"Bearer {token['access_token']}"}, customer_id=created.json()["customer_id"]
    )


async def buy(client: aiohttp.ClientSession, customer: Customer, n: int) -> None:
    body = {
        "product_name": f"bench item {n}",
        "quantity": 1 + n % 3,
        "unit_price": f"{1 + n % 97}.{n % 100:02d}",
        "currency": "USD",
    }
    # With a key, as a careful client sends it: a request cut short (the server closing an idle keep-alive
    # connection just as it was reused) is sent again, and a purchase the API had taken is not taken twice.
    headers = {**customer.headers, "Idempotency-Key": f"bench-{uuid.uuid4()}"}
    for attempt in range(3):
        try:
            async with client.post("/purchases", json=body, headers=headers) as answer:
                if answer.status == 202:
                    customer.accepted.append(((await answer.json())["event_id"], time.monotonic()))
                return
        except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError):
            if attempt == 2:
                raise


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


async def watch_marts(dsn: str, customer_ids: list[str], expected: list[dict], interval: float, observed) -> None:
    """Polls marts.customer_spend for every customer at once, noting each change of a customer's count."""
    import psycopg

    last = [None] * len(customer_ids)
    position = {customer_id: i for i, customer_id in enumerate(customer_ids)}
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        while True:
            counts = [0] * len(customer_ids)
            try:
                cursor = await conn.execute(
                    "select customer_id::text, sum(purchase_count) from marts.customer_spend "
                    "where customer_id = any(%s::uuid[]) group by customer_id",
                    (customer_ids,),
                )
                for customer_id, count in await cursor.fetchall():
                    counts[position[customer_id]] = int(count)
            except psycopg.errors.UndefinedTable:  # dbt has not built the marts yet
                pass
            now = time.monotonic()
            for i, count in enumerate(counts):
                if count != last[i]:
                    observed[i]["marts"].append((now, count))
                    last[i] = count
            if all("total" in e for e in expected):
                done = all(count >= e["total"] for count, e in zip(counts, expected, strict=True))
                if done or now > expected[0]["deadline"]:
                    return
            await asyncio.sleep(interval)


async def _watch_all(
    base: str, dsn: str, customers: list[tuple[dict, str]], drain: float, expected_queue, result_queue
) -> None:
    expected = [{} for _ in customers]
    observed = [{"listed": [], "counted": [], "marts": []} for _ in customers]

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

    async with http_session(base, connections=len(customers)) as client:
        await asyncio.gather(
            learn_what_to_expect(),
            watch_marts(dsn, [c for _, c in customers], expected, MARTS_INTERVAL_S, observed),
            *(
                watch_customer(client, h, e, WATCH_INTERVAL_S, o)
                for (h, _), e, o in zip(customers, expected, observed, strict=True)
            ),
        )
    result_queue.put(observed)


def watcher_process(
    base: str, dsn: str, customers: list[tuple[dict, str]], drain: float, expected_queue, result_queue
) -> None:
    asyncio.run(_watch_all(base, dsn, customers, drain, expected_queue, result_queue))


def first_seen(customer: Customer, observed: dict) -> None:
    """listed_at / counted_at of each accepted purchase, from the watcher's timeline of changes."""
    index = {event_id: i for i, (event_id, _) in enumerate(customer.accepted)}
    newest = -1
    for seen_at, ids in observed["listed"]:
        top = max((index[e] for e in ids if e in index), default=-1)
        while newest < top:
            newest += 1
            customer.listed_at[newest] = seen_at
    for kind, seen in (("counted", customer.counted_at), ("marts", customer.in_marts_at)):
        counted = 0
        for seen_at, count in observed.get(kind, []):
            while counted < min(count, len(customer.accepted)):
                seen[counted] = seen_at
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
    """Workers send purchase n at started + n / rate (as soon as possible when late): one per 10 purchases/s,
    at least 32, so that the API's latency under load, not the number of requests in flight, sets the rate
    achieved (32 in flight at 90 ms each cap it at 350/s). Returns how long it
    took: with the pipeline sharing the cores, the achieved rate can fall short of the planned one."""
    workers = max(32, int(rate / 10))
    async with http_session(base, connections=workers) as client:
        started = time.monotonic()
        next_purchase = iter(range(int(rate * seconds)))

        async def paced_buyer():
            for n in next_purchase:
                delay = started + n / rate - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                await buy(client, customers[n % len(customers)], n)

        await asyncio.gather(*(paced_buyer() for _ in range(workers)))
        return time.monotonic() - started


@dataclass
class Measured:
    """The three delays of one load, the purchases never seen, and the load itself."""

    listed: list[float]
    counted: list[float]
    in_marts: list[float]
    missing: dict[str, int]
    load: dict


def measure(base: str, dsn: str, customers_n: int, rate: float, seconds: float, drain: float, label: str) -> Measured:
    """The watcher runs in a process of its own, so that polling never delays the paced purchases."""
    customers = asyncio.run(sign_up_all(base, uuid.uuid4().hex[:6], customers_n))
    context = multiprocessing.get_context("spawn")
    expected_queue, result_queue = context.Queue(), context.Queue()
    watcher = context.Process(
        target=watcher_process,
        args=(base, dsn, [(c.headers, c.customer_id) for c in customers], drain, expected_queue, result_queue),
    )
    watcher.start()
    try:
        sending_s = asyncio.run(buy_at_rate(base, customers, rate, seconds))
        load_average = os.getloadavg()[0]
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
    in_marts, marts_missing = delays(customers, "in_marts_at")
    print(
        f"{label}: {sent} sent, {accepted} accepted in {sending_s:.0f} s (planned {seconds:.0f} s); listed "
        f"{len(listed)} (missing {listed_missing}), counted {len(counted)} (missing {counted_missing}), in the "
        f"marts {len(in_marts)} (missing {marts_missing}); load average {load_average:.2f}"
    )
    load = {
        "rate_per_s": rate,
        "customers": customers_n,
        "seconds": seconds,
        "sent": sent,
        "accepted": accepted,
        "achieved_rate_per_s": round(accepted / sending_s, 1),
        "load_average_1m": round(load_average, 2),
    }
    missing = {"never_listed": listed_missing, "never_counted": counted_missing, "never_in_marts": marts_missing}
    return Measured(listed, counted, in_marts, missing, load)


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


# figure name -> (delay, what it is, goal on the p95)
DELAYS = {
    "list": ("listed", "202 -> listed by GET /customers/me/purchases", "<= 5 s"),
    "spend": ("counted", "202 -> counted by GET /customers/me/spend", "<= the list's p95 + 2 s"),
    "marts": ("in_marts", "202 -> counted in marts.customer_spend (what Grafana and the alerts read)", "<= 60 s"),
}


def record_rate(suffix: str, measured: Measured, idle: Measured) -> None:
    list_p95 = summary(measured.listed)["p95"]
    for kind, (attribute, what, goal) in DELAYS.items():
        stats = summary(getattr(measured, attribute))
        record(
            f"freshness_{kind}_p95_s{suffix}",
            stats["p95"],
            "s",
            summary(getattr(idle, attribute))["p95"],
            higher_is_better=False,
            what=what,
            goal=goal,
            list_p95=list_p95,
            p50=stats["p50"],
            max=stats["max"],
            baseline_is="p95 for single purchases on the idle pipeline",
            load=measured.load,
            **measured.missing,
        )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rates", default=os.environ.get("BENCH_E2E_RATES", "200,1000"))
    parser.add_argument("--customers", type=int, default=int(os.environ.get("BENCH_E2E_CUSTOMERS", 50)))
    parser.add_argument("--seconds", type=float, default=float(os.environ.get("BENCH_E2E_SECONDS", 120)))
    parser.add_argument("--drain", type=float, default=240)
    args = parser.parse_args()
    rates = [float(rate) for rate in args.rates.split(",")]
    from purchases.settings import get_settings

    settings = get_settings()
    base = f"http://{settings.api_host}:{settings.api_port}"
    dsn = settings.dsn_as("api")  # the API's role reads the marts, as Grafana's does
    started_here = not stack_is_up(base)
    if started_here:
        subprocess.run(["bash", "-c", "source scripts/env.sh && scripts/up.sh"], cwd=ROOT, check=True)
    try:
        idle = measure(base, dsn, 3, 0.2, 15, args.drain, "idle baseline")
        runs = {
            rate: measure(base, dsn, args.customers, rate, args.seconds, args.drain, f"{rate:.0f}/s") for rate in rates
        }
    finally:
        if started_here:
            subprocess.run(["bash", "-c", "source scripts/env.sh && scripts/down.sh"], cwd=ROOT)
    samples = RESULTS_DIR / "freshness_samples.csv"
    with samples.open("w") as out:
        out.write("rate_per_s,kind,seconds\n")
        for rate, measured in runs.items():
            for kind, (attribute, _, _) in DELAYS.items():
                out.writelines(f"{rate:.0f},{kind},{value:.3f}\n" for value in getattr(measured, attribute))
    for position, (_rate, measured) in enumerate(runs.items()):
        record_rate("" if position == 0 else "_high_rate", measured, idle)


if __name__ == "__main__":
    main()
