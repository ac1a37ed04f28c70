"""Task start cost on both executors: `make bench-executors`.

The same small load on two private stacks (bench/private_stack.py, beside any `make up`), one on the
LocalExecutor (what `make up` runs) and one on the CeleryExecutor with two workers that share no disk
(AIRFLOW_EXECUTOR=celery). Each: sign up a customer, then ROUNDS times buy PURCHASES purchases and wait until
marts.customer_spend counts them all. Then, from Airflow's database, each successful try of the quality gate
(`purchases_quality.quality_gate`) and of the dbt build (`purchases_transform.dbt.dbt_producer_watcher`) in
the runs the loaded events triggered: how long it ran, and how long it waited from queued to started.

The LocalExecutor forks its tasks from the scheduler, which has imported dbt, Great Expectations and Cosmos
once (purchases/scheduler.py); each Celery worker imports the same list before it starts its pool
(purchases/worker.py), so its tasks start as warm. Figure task_seconds_celery: the dbt build's median
seconds on Celery; baseline: on the LocalExecutor; with the quality gate's and the queue waits of both.

Settings (environment): BENCH_EXECUTORS_ROUNDS (default 4), BENCH_EXECUTORS_PURCHASES (30).
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from pathlib import Path

import httpx

from bench.private_stack import PrivateStack
from bench.results import record

ROUNDS = int(os.environ.get("BENCH_EXECUTORS_ROUNDS", 4))
PURCHASES = int(os.environ.get("BENCH_EXECUTORS_PURCHASES", 30))
GATE = ("purchases_quality", "quality_gate")
BUILD = ("purchases_transform", "dbt.dbt_producer_watcher")


def counted_in_the_marts(stack: PrivateStack) -> int:
    import psycopg

    try:
        return int(stack.warehouse_rows("select coalesce(sum(purchase_count), 0) from marts.customer_spend")[0][0])
    except psycopg.errors.UndefinedTable:
        return 0


def load(stack: PrivateStack) -> None:
    with httpx.Client(base_url=stack.api, timeout=30) as client:
        username, password = f"bench_executors_{os.getpid()}", "a-long-enough-password"
        client.post("/customers", json={"username": username, "password": password}).raise_for_status()
        token = client.post("/auth/token", data={"username": username, "password": password}).json()
        headers = {"Authorization": f"Bearer {token['access_token']}"}
        for round_ in range(ROUNDS):
            for n in range(PURCHASES):
                body = {"product_name": f"round {round_} item {n}", "quantity": 1, "unit_price": "1.00"}
                client.post("/purchases", json=body, headers=headers).raise_for_status()
            expected, deadline = (round_ + 1) * PURCHASES, time.monotonic() + 300
            while counted_in_the_marts(stack) < expected:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{stack.executor}: round {round_} not in the marts within 300 s")
                time.sleep(1)
            print(f"{stack.executor}: round {round_ + 1}/{ROUNDS} in the marts", flush=True)


def measure(executor: str) -> dict:
    with tempfile.TemporaryDirectory(prefix=f"bench_executors_{executor}_") as tmp:
        stack = PrivateStack(Path(tmp), f"bench_{executor}", executor=executor)
        try:
            stack.up()
            load(stack)
            figures = {}
            for name, (dag_id, task_id) in (("quality_gate", GATE), ("dbt_build", BUILD)):
                times = stack.task_times(dag_id, task_id, run_type="asset_triggered")
                figures[name] = {
                    "median_s": round(statistics.median(t.seconds for t in times), 2) if times else None,
                    "median_queued_s": round(statistics.median(t.queued_seconds for t in times), 2) if times else None,
                    "runs": len(times),
                    "seconds": [t.seconds for t in times],
                    "hosts": sorted({t.hostname for t in times}),
                }
            return figures
        finally:
            stack.stop()


def main() -> None:
    local = measure("local")
    celery = measure("celery")
    print({"local": local, "celery": celery})
    record(
        "task_seconds_celery",
        celery["dbt_build"]["median_s"],
        "s",
        local["dbt_build"]["median_s"],
        higher_is_better=False,
        what="median seconds of the dbt build task (purchases_transform's dbt_producer_watcher) in asset-triggered "
        "runs on the CeleryExecutor (2 workers, no shared disk) vs the LocalExecutor; quality gate and queue "
        "waits in the details",
        rounds=ROUNDS,
        purchases_per_round=PURCHASES,
        local=local,
        celery=celery,
        load_average_1m=round(os.getloadavg()[0], 2),
        baseline_is="the same on the LocalExecutor (make up's)",
    )


if __name__ == "__main__":
    main()
