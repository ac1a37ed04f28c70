"""Incremental dbt cost vs history: `make bench-dbt`.

Two runs of the same scenario in a dedicated database: history of 10,000 events (baseline) and of 1,000,000
events (value), written straight into staging with generate_series, then fully built once. Then 10,000 new
events arrive (today's purchases of the same customers, loaded now) and the pipeline's micro-batch run is
timed: `dbt build` of every model with its data tests scoped to the increment (var test_scope=increment, as
the transform DAG's asset-triggered runs set it; dbt/macros/increment.sql), in-process (dbtRunner) as the
DAG's build task runs it. Goal: value / baseline <= 1.5, i.e. the cost follows the new data, not the history.

Also reported (details): the models alone (`dbt run`) after as many new events again; the daily run's
`dbt build` with every test on whole tables and the reconciliations (which does grow with history, once a
day); and the slowest nodes of the micro-batch build.

Settings (environment): BENCH_DBT_HISTORY (default 1000000), BENCH_DBT_BASELINE_HISTORY (10000),
BENCH_DBT_NEW_EVENTS (10000), BENCH_DBT_CUSTOMERS (1000), BENCH_DBT_DB (purchases_bench_dbt).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
import time
from pathlib import Path

import psycopg
from psycopg.conninfo import make_conninfo

from bench.results import record
from purchases import transform
from purchases.roles import setup_warehouse
from purchases.settings import get_settings
from purchases.transform.project import profiles_dir
from purchases.warehouse import drop_database

HISTORY = int(os.environ.get("BENCH_DBT_HISTORY", 1_000_000))
BASELINE_HISTORY = int(os.environ.get("BENCH_DBT_BASELINE_HISTORY", 10_000))
NEW_EVENTS = int(os.environ.get("BENCH_DBT_NEW_EVENTS", 10_000))
CUSTOMERS = int(os.environ.get("BENCH_DBT_CUSTOMERS", 1_000))
DATABASE = os.environ.get("BENCH_DBT_DB", "purchases_bench_dbt")

CUSTOMERS_SQL = """
insert into app.customers (customer_id, username, password_hash, created_at)
select ('00000000-0000-4000-8000-' || lpad(to_hex(i), 12, '0'))::uuid, 'bench_' || i, 'not-a-hash',
       now() - interval '400 days'
from generate_series(1, %(customers)s) as i
"""

# Purchases of `customers` customers, `count` of them spread evenly over `days` days ending `until`,
# loaded a minute after they were made. History comes as the loader and the gate make it: one batch per day,
# each passed by the gate a minute after that day's last purchase (so only the newest batches fall within the
# incremental lookback, as in a running shop; one batch of all history, passed at the watermark, would be
# read again by every run). New events: one batch, loaded and passed now. Prices 1.00-100.99, 1-3 units, 70%
# USD, 20% EUR, 10% GBP.
EVENTS_SQL = """
with batches as (
    insert into staging.loaded_batches (kafka_topic, loaded, checked_at)
    select 'purchases', 0,
           case when %(loaded_now)s then now()
                else %(until)s::timestamptz - day * interval '1 day' + interval '1 minute' end
    from generate_series(0, %(batches)s - 1) as day
    returning batch_id, checked_at
),
numbered as (
    select batch_id, (row_number() over (order by checked_at desc) - 1)::int as day from batches
)
insert into staging.purchase_events (event_id, customer_id, product_name, description, quantity, unit_price,
    currency, purchased_at, schema_version, extra, kafka_topic, kafka_partition, kafka_offset, loaded_at,
    batch_id)
select gen_random_uuid(),
       ('00000000-0000-4000-8000-' || lpad(to_hex(1 + (i + %(offset)s) %% %(customers)s), 12, '0'))::uuid,
       'product ' || (i %% 500), null, 1 + i %% 3,
       (1 + ((i::bigint + %(offset)s) * 7919) %% 10000 / 100.0)::numeric(12, 2),
       case when i %% 10 < 7 then 'USD' when i %% 10 < 9 then 'EUR' else 'GBP' end,
       purchased_at, 1, '{}'::jsonb, 'purchases', i %% 3, %(offset)s + i,
       case when %(loaded_now)s then now() else purchased_at + interval '1 minute' end,
       numbered.batch_id
from (
    select i, %(until)s::timestamptz - %(days)s * interval '1 day' * (i::float8 / %(count)s) as purchased_at,
           least(%(batches)s - 1, floor(%(days)s * (i::float8 / %(count)s)))::int as day
    from generate_series(1, %(count)s) as i
) as spread
join numbered using (day)
"""


# What the transform DAG's build leaves out: the seeds (built once here) and the unit tests (they check the
# SQL, not the data; `make test` runs them).
AS_THE_DAG = ("--exclude", "resource_type:seed", "resource_type:unit_test")


def dsn() -> str:
    return make_conninfo(get_settings().warehouse_dsn, dbname=DATABASE)


def dbt(*args: str, target: Path) -> dict:
    """One in-process dbt command; returns its run_results.json."""
    from dbt.cli.main import dbtRunner

    outcome = dbtRunner().invoke(
        [
            *args,
            "--project-dir",
            str(transform.project_dir()),
            "--profiles-dir",
            str(profiles_dir()),
            "--target-path",
            str(target),
            "--quiet",
        ]
    )
    if not outcome.success:
        raise RuntimeError(f"dbt {' '.join(args)} failed: {outcome.exception or outcome.result}")
    return json.loads((target / "run_results.json").read_text())


def add_events(conn, count: int, offset: int, *, days: float, until: str, loaded_now: bool) -> None:
    conn.execute(
        EVENTS_SQL,
        {
            "count": count,
            "offset": offset,
            "customers": CUSTOMERS,
            "days": days,
            "until": until,
            "loaded_now": loaded_now,
            "batches": 1 if loaded_now else max(1, math.ceil(days)),
        },
        prepare=False,
    )


def scenario(history: int, target: Path) -> dict:
    """Fresh database with `history` events fully built; then NEW_EVENTS arrive and the increment is timed."""
    drop_database(dsn())
    setup_warehouse(dsn())
    os.environ["DBT_DBNAME"] = DATABASE
    with psycopg.connect(dsn(), autocommit=True) as conn:
        conn.execute(CUSTOMERS_SQL, {"customers": CUSTOMERS})
        started = time.perf_counter()
        add_events(conn, history, 0, days=365, until="yesterday", loaded_now=False)
        loaded_s = time.perf_counter() - started
        started = time.perf_counter()
        dbt("seed", target=target)
        dbt("run", target=target)
        full_build_s = time.perf_counter() - started
        conn.execute("vacuum analyze")
        dbt("run", target=target)  # warm: partial parse in place, nothing new to do

        add_events(conn, NEW_EVENTS, history, days=0.9, until="now", loaded_now=True)
        started = time.perf_counter()
        build = dbt("build", *AS_THE_DAG, "--vars", "{test_scope: increment}", target=target)
        build_with_tests_s = time.perf_counter() - started

        add_events(conn, NEW_EVENTS, history + NEW_EVENTS, days=0.9, until="now", loaded_now=True)
        started = time.perf_counter()
        results = dbt("run", target=target)
        incremental_s = time.perf_counter() - started

        add_events(conn, NEW_EVENTS, history + 2 * NEW_EVENTS, days=0.9, until="now", loaded_now=True)
        started = time.perf_counter()
        dbt("build", *AS_THE_DAG, "--vars", "{test_scope: all}", target=target)
        daily_build_s = time.perf_counter() - started

        counts = conn.execute(
            "select (select count(*) from marts.customer_purchases), (select count(*) from marts.customer_spend_daily)"
        ).fetchone()
    models = {r["unique_id"].split(".")[-1]: round(r["execution_time"], 3) for r in results["results"]}
    slowest = sorted(build["results"], key=lambda r: r["execution_time"], reverse=True)[:5]
    figures = {
        "history_events": history,
        "staging_insert_s": round(loaded_s, 2),
        "full_build_s": round(full_build_s, 2),
        "incremental_run_s": round(incremental_s, 3),
        "incremental_build_with_tests_s": round(build_with_tests_s, 3),
        "daily_build_with_all_tests_s": round(daily_build_s, 3),
        "model_seconds": models,
        "slowest_nodes_of_the_incremental_build": {r["unique_id"]: round(r["execution_time"], 3) for r in slowest},
        "customer_purchases_rows": counts[0],
        "customer_spend_daily_rows": counts[1],
    }
    print(json.dumps(figures))
    return figures


def main() -> None:
    target = Path(tempfile.mkdtemp(prefix="bench_dbt_target_"))
    try:
        baseline = scenario(BASELINE_HISTORY, target)
        value = scenario(HISTORY, target)
    finally:
        drop_database(dsn())
        shutil.rmtree(target, ignore_errors=True)
    record(
        "dbt_incremental_s",
        value["incremental_build_with_tests_s"],
        "s",
        baseline["incremental_build_with_tests_s"],
        higher_is_better=False,
        goal_ratio=1.5,
        new_events=NEW_EVENTS,
        customers=CUSTOMERS,
        what=f"incremental `dbt build` of all models with their data tests scoped to the increment (in-process, "
        f"as the DAG's build task) after {NEW_EVENTS:,} new events, on {HISTORY:,} events of history (value) vs "
        f"{BASELINE_HISTORY:,} (baseline)",
        history=value,
        baseline_history=baseline,
        models_only_ratio=round(value["incremental_run_s"] / baseline["incremental_run_s"], 3),
        daily_build_ratio=round(value["daily_build_with_all_tests_s"] / baseline["daily_build_with_all_tests_s"], 3),
    )


if __name__ == "__main__":
    main()
