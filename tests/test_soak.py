"""Soak: customers buy over HTTP (10 % retried with the same Idempotency-Key) while the loader is SIGKILLed
three times and Postgres is restarted once. After draining, staging and the marts hold exactly the accepted
purchases, once each, and every customer's totals are exact to the cent.

`make test` runs a short version (SOAK_PURCHASES, default 2000); `make soak` runs 100,000.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from decimal import Decimal
from pathlib import Path

import aiohttp
import httpx
import psycopg
import pytest
from support import Customer, sign_up

from purchases.broker import partitions_of

ROOT = Path(__file__).resolve().parents[1]
PURCHASES = int(os.environ.get("SOAK_PURCHASES", "2000"))
CUSTOMERS = int(os.environ.get("SOAK_CUSTOMERS", "20" if PURCHASES < 10_000 else "100"))
LOADER_KILLS = 3
pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def restart_postgres() -> None:
    cluster = sorted(os.listdir("/etc/postgresql"))[-1]
    subprocess.run(
        ["pg_ctlcluster", "--skip-systemctl-redirect", cluster, "main", "restart"], check=True, capture_output=True
    )


def wait_for_postgres(dsn: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            psycopg.connect(dsn, connect_timeout=2).close()
            return
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


class LoaderFleet:
    """One real loader process per partition, restarted when it ends, like the continuous DAG does."""

    def __init__(self, bootstrap: str, dsn: str, partitions: list[int]):
        self.bootstrap, self.dsn, self.partitions = bootstrap, dsn, partitions
        self.processes: dict[int, subprocess.Popen] = {}
        self.stopping = threading.Event()
        self.kills = 0
        self.crashes = 0  # runs that ended non-zero by themselves (e.g. while Postgres restarted)
        self.log = open(ROOT / "logs" / "tests" / f"soak_loader_{os.getpid()}.log", "ab")
        self.thread = threading.Thread(target=self._supervise, daemon=True)

    def _spawn(self, partition: int) -> subprocess.Popen:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "purchases.load",
                "--bootstrap-servers",
                self.bootstrap,
                "--dsn",
                self.dsn,
                "load",
                "--partition",
                str(partition),
                "--window",
                "5",
            ],
            cwd=ROOT,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )

    def _supervise(self) -> None:
        while not self.stopping.is_set():
            for partition in self.partitions:
                process = self.processes.get(partition)
                if process is None or process.poll() is not None:
                    if process is not None and process.returncode not in (0, -signal.SIGKILL):
                        self.crashes += 1
                    self.processes[partition] = self._spawn(partition)
            time.sleep(0.2)

    def start(self) -> None:
        self.thread.start()

    def kill_all(self) -> None:
        for process in list(self.processes.values()):
            if process.poll() is None:
                process.send_signal(signal.SIGKILL)
        self.kills += 1

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join()
        for process in self.processes.values():
            if process.poll() is None:
                process.terminate()
                process.wait(30)

    def drain(self) -> None:
        for partition in self.partitions:
            subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "purchases.load",
                    "--bootstrap-servers",
                    self.bootstrap,
                    "--dsn",
                    self.dsn,
                    "load",
                    "--partition",
                    str(partition),
                    "--window",
                    "300",
                    "--until-idle",
                ],
                cwd=ROOT,
                check=True,
                stdout=self.log,
                stderr=subprocess.STDOUT,
            )


async def post_purchases(base: str, customers: list[dict], total: int, on_progress) -> dict:
    accepted: dict[str, tuple[str, str, Decimal]] = {}
    retried = mismatched_retries = 0
    refused: Counter = Counter()
    rng = random.Random(7)
    queue: asyncio.Queue = asyncio.Queue()
    for n in range(total):
        queue.put_nowait(n)

    async def worker(client: aiohttp.ClientSession):
        nonlocal retried, mismatched_retries
        while not queue.empty():
            n = queue.get_nowait()
            customer = customers[n % len(customers)]
            price = Decimal(rng.randint(1, 99_999)) / 100
            body = {
                "product_name": f"soak item {n}",
                "quantity": 1 + n % 5,
                "unit_price": str(price),
                "currency": ("USD", "EUR", "JPY")[n % 3],
            }
            headers = dict(customer.headers, **{"Idempotency-Key": f"soak-{n}"})
            async with client.post("/purchases", json=body, headers=headers) as answer:
                if answer.status != 202:
                    refused[answer.status] += 1
                    continue
                event_id = (await answer.json())["event_id"]
            accepted[event_id] = (customer.id, body["currency"], body["quantity"] * price)
            if n % 10 == 0:  # a client that did not see the answer retries with the same key
                async with client.post("/purchases", json=body, headers=headers) as again:
                    retried += 1
                    mismatched_retries += again.status != 202 or (await again.json())["event_id"] != event_id
            on_progress(len(accepted))

    # aiohttp: httpx spent ~7 ms of CPU per request here with 32 in flight, which made the client the limit.
    async with aiohttp.ClientSession(
        base, connector=aiohttp.TCPConnector(limit=32), timeout=aiohttp.ClientTimeout(total=60)
    ) as client:
        await asyncio.gather(*(worker(client) for _ in range(32)))
    return {
        "accepted": accepted,
        "retried": retried,
        "mismatched_retries": mismatched_retries,
        "refused": dict(refused),
    }


def sign_up_customers(base: str, count: int) -> list[Customer]:
    with httpx.Client(base_url=base, timeout=30) as client:
        return [sign_up(client, "soak") for _ in range(count)]


def test_soak_exact_accounting_through_kills_and_a_postgres_restart(api_server, broker, warehouse_dsn):
    from purchases.check import run_quality_gate
    from purchases.transform import run_dbt

    customers = sign_up_customers(api_server.url, CUSTOMERS)
    fleet = LoaderFleet(broker.bootstrap, warehouse_dsn, partitions_of(broker.bootstrap, "purchases"))
    fleet.start()
    milestones = sorted({max(1, PURCHASES * k // 4) for k in (1, 2, 3)})  # loader kills
    restart_at = PURCHASES * 3 // 5
    done = {"restarted": False}
    faults = threading.Lock()

    def on_progress(count: int) -> None:
        # Faults are injected from a thread so that posting goes on meanwhile.
        if milestones and count >= milestones[0] and faults.acquire(blocking=False):
            milestones.pop(0)
            threading.Thread(target=lambda: (fleet.kill_all(), faults.release()), daemon=True).start()
        if not done["restarted"] and count >= restart_at:
            done["restarted"] = True
            threading.Thread(target=restart_postgres, daemon=True).start()

    started = time.monotonic()
    outcome = asyncio.run(post_purchases(api_server.url, customers, PURCHASES, on_progress))
    posting_s = time.monotonic() - started
    while milestones:  # a kill still due (few purchases): do it now
        milestones.pop(0)
        fleet.kill_all()
    wait_for_postgres(warehouse_dsn)
    fleet.stop()
    fleet.drain()
    run_quality_gate(warehouse_dsn)  # the marts read only what the gate passed
    run_dbt("build")

    accepted = outcome["accepted"]
    expected: dict[tuple[str, str], Decimal] = defaultdict(Decimal)
    counts: Counter = Counter()
    for customer_id, currency, total in accepted.values():
        expected[(customer_id, currency)] += total
        counts[(customer_id, currency)] += 1
    ours = ([c.id for c in customers],)  # other tests share the session's warehouse
    with psycopg.connect(warehouse_dsn) as conn:
        staged = {
            row[0]
            for row in conn.execute(
                "select event_id::text from staging.purchase_events where customer_id = any(%s::uuid[])", ours
            )
        }
        staged_rows = conn.execute(
            "select count(*) from staging.purchase_events where customer_id = any(%s::uuid[])", ours
        ).fetchone()[0]
        marts_rows = conn.execute(
            "select count(*) from marts.customer_purchases where customer_id = any(%s::uuid[])", ours
        ).fetchone()[0]
        spend = {
            (row[0], row[1]): (row[2], row[3])
            for row in conn.execute(
                "select customer_id::text, currency, total_spend, purchase_count from marts.customer_spend "
                "where customer_id = any(%s::uuid[])",
                ours,
            )
        }
        rejected = conn.execute(
            "select count(*) from staging.purchase_events_rejected where customer_id = any(%s::uuid[])", ours
        ).fetchone()[0]

    print(
        f"\nsoak: posted {PURCHASES} purchases from {CUSTOMERS} customers in {posting_s:.1f} s "
        f"({PURCHASES / posting_s:.0f}/s); {len(accepted)} accepted, refused {outcome['refused']}, "
        f"{outcome['retried']} retried with the same key ({outcome['mismatched_retries']} got another id); "
        f"loader SIGKILLed {fleet.kills} times, {fleet.crashes} loader runs failed by themselves, "
        f"Postgres restarted {int(done['restarted'])} time(s)"
    )
    print(
        f"soak: staging holds {staged_rows} rows ({len(staged)} distinct), marts.customer_purchases "
        f"{marts_rows}; {rejected} rejected; {len(spend)} (customer, currency) totals"
    )

    assert outcome["mismatched_retries"] == 0
    assert fleet.kills == LOADER_KILLS and done["restarted"]
    assert staged == set(accepted), f"missing {len(set(accepted) - staged)}, unexpected {len(staged - set(accepted))}"
    assert staged_rows == len(accepted) and marts_rows == len(accepted)
    assert rejected == 0
    assert spend == {key: (expected[key], counts[key]) for key in expected}
