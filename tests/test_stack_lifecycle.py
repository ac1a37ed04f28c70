"""`make up` / `make down` lose no accepted purchase: the real scripts/up.sh and scripts/down.sh, on a stack
private to this test (its own free ports, databases, run, log, secrets and Airflow directories).

The embedded broker keeps its records in memory only. `down` must stop the API, drain every partition into
staging (itself, whether or not the Airflow loader runs: here it is paused), and only then stop the broker;
and the broker must not be one of honcho's processes, which all stop when any one of them exits.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import httpx
import psutil
import psycopg
import pytest
from support import Customer, sign_up

from bench.private_stack import PrivateStack

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

BUY = {"product_name": "Lamp", "quantity": 2, "unit_price": "19.99", "currency": "EUR"}


class Stack(PrivateStack):
    """A private stack (bench/private_stack.py) on the LocalExecutor, and what the test reads of it."""

    def __init__(self, tmp: Path):
        super().__init__(tmp, "stack_test")
        self.bootstrap = f"127.0.0.1:{self.ports['KAFKA_PORT']}"

    def staged(self, customer_id: str) -> list[str]:
        with psycopg.connect(self.dsn) as conn:
            rows = conn.execute(
                "select event_id::text from staging.purchase_events where customer_id = %s", (customer_id,)
            ).fetchall()
        return sorted(row[0] for row in rows)

    def pause_loader(self) -> None:
        """Pause the loader DAG, then wait until no loader task runs any more (a running one finishes)."""
        self.sh(".venv/bin/airflow dags pause purchases_ingest", timeout=120)
        idle_since, deadline = None, time.monotonic() + 90
        while True:
            with psycopg.connect(self.dsn) as conn:
                (loaders,) = conn.execute(
                    "select count(*) from pg_stat_activity where datname = current_database() "
                    "and application_name like 'purchases-loader%%'"
                ).fetchone()
            now = time.monotonic()
            idle_since = (idle_since or now) if loaders == 0 else None
            if idle_since is not None and now - idle_since > 3:
                return
            assert now < deadline, "a loader task still runs 90 s after the DAG was paused"
            time.sleep(0.5)


def buy(stack: Stack, customer: Customer | None, count: int) -> tuple[Customer, list[str]]:
    """Sign up (when no customer is given) and buy `count` purchases, each answered 202: the event ids."""
    with httpx.Client(base_url=stack.api, timeout=30) as client:
        customer = customer or sign_up(client, "lifecycle")
        ids = []
        for n in range(count):
            answer = client.post("/purchases", json=dict(BUY, description=f"#{n}"), headers=customer.headers)
            assert answer.status_code == 202, answer.text
            ids.append(answer.json()["event_id"])
    return customer, ids


def listed(stack: Stack, customer: dict) -> list[str]:
    items, cursor = [], None
    with httpx.Client(base_url=stack.api, timeout=30) as client:
        while True:
            page = client.get(
                "/customers/me/purchases",
                headers=customer.headers,
                params={"limit": 200, **({"cursor": cursor} if cursor else {})},
            )
            assert page.status_code == 200, page.text
            items += [item["event_id"] for item in page.json()["items"]]
            cursor = page.json()["next_cursor"]
            if not cursor:
                return sorted(items)


def honcho_process(stack: Stack, command: str) -> psutil.Process:
    root = psutil.Process(stack.pid("stack"))
    for process in root.children(recursive=True):
        if command in " ".join(process.cmdline()) and os.getpgid(process.pid) == process.pid:
            return process
    raise AssertionError(f"no {command!r} among honcho's processes")


def wait_gone(pid: int, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
        assert time.monotonic() < deadline, f"{what} (pid {pid}) still runs after {timeout:.0f} s"
        time.sleep(0.2)


def test_down_drains_the_broker_and_a_crash_keeps_it(tmp_path):
    from purchases.broker import log_end_offsets

    stack = Stack(tmp_path)
    try:
        # 1. Bought, then `down` at once: all 50 reach staging, and nothing of the stack is left listening.
        stack.up()
        broker = stack.pid("broker")
        assert broker is not None, "up.sh must start the broker in a session of its own, its pid in broker.pid"
        assert broker not in [p.pid for p in psutil.Process(stack.pid("stack")).children(recursive=True)], (
            "the broker must not be one of honcho's processes"
        )
        customer, first = buy(stack, None, 50)
        stack.down()
        assert stack.staged(customer.id) == sorted(first)
        assert stack.listening() == [], "down left something listening"
        wait_gone(broker, 5, "the broker")

        # 2. With the loader DAG paused, only the drain can load them: bought, `down` at once, all 100 there.
        stack.up()
        stack.pause_loader()
        _, second = buy(stack, customer, 50)
        out = stack.down()
        assert stack.staged(customer.id) == sorted(first + second)  # exactly once: 100 rows, 100 ids
        assert "for 50 records of purchases" in out, "the drain did not wait for the 50 unloaded records"
        assert stack.listening() == []

        # 3. Up again: the API lists all 100. Then one of honcho's processes crashes: honcho stops the rest,
        # the broker runs on and keeps its records; `down` drains and stops it.
        stack.up()
        assert listed(stack, customer) == sorted(first + second)
        _, third = buy(stack, customer, 5)
        broker, honcho = stack.pid("broker"), stack.pid("stack")
        honcho_process(stack, "airflow dag-processor").send_signal(signal.SIGKILL)
        wait_gone(honcho, 60, "honcho, after one of its processes crashed")
        assert stack.ports["API_PORT"] not in stack.listening(), "the API outlived the crash of the stack"
        assert psutil.pid_exists(broker) and psutil.Process(broker).status() != psutil.STATUS_ZOMBIE, (
            "the broker died with honcho's processes"
        )
        assert sum(log_end_offsets(stack.bootstrap, "purchases").values()) == 5, "the broker lost its records"
        out = stack.down()
        assert stack.staged(customer.id) == sorted(first + second + third)
        assert stack.listening() == []
        wait_gone(broker, 5, "the broker")
    finally:
        stack.stop()
