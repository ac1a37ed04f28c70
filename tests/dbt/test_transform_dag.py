"""The `purchases_transform` DAG: Cosmos (watcher mode) runs one `dbt build` and renders a task for each model
and its tests; a run with a data interval (a backfill, a daily or manual run) rebuilds exactly the UTC days of
that interval, idempotently.
Real `dag.test()` runs against a migrated Airflow metadata database and the real dbt project."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from dbt_test_data import FIRST_BATCH, add_customers, load_purchases
from support import load_dag

from purchases import transform
from purchases.transform.cosmos import report_stale_sources_without_pruning

ROOT = Path(__file__).resolve().parents[2]
UTC = UTC
WRITE_TIME_COLUMNS = ("last_transformed_at",)
DAILY_COLUMNS = (
    "customer_id, currency, spend_date, spend, purchase_count, first_purchase_at, last_purchase_at,"
    " daily_threshold, daily_threshold_crossed_at, daily_threshold_fingerprint"
)


def daily_rows(db) -> dict[tuple, tuple]:
    """customer_spend_daily by key -> (row content, physical row version): xmin changes when rewritten."""
    return {
        (row[0], row[1], row[2].isoformat()): (row[:-1], row[-1])
        for row in db.execute(f"select {DAILY_COLUMNS}, xmin::text from marts.customer_spend_daily")
    }


def run_for_interval(day: str, *, regenerate_docs: bool = True):
    """A dag.test() run whose data interval is the UTC day `day` (a manual run infers the interval that
    ends at its logical date, as the scheduler's backfill runs of a daily timetable have one day each)."""
    from airflow.utils.state import DagRunState

    end = datetime.fromisoformat(day).replace(tzinfo=UTC) + (datetime(2000, 1, 2) - datetime(2000, 1, 1))
    run = load_dag("purchases_transform").test(
        logical_date=end, mark_success_pattern=None if regenerate_docs else "regenerate_dbt_docs"
    )
    assert run.state == DagRunState.SUCCESS, f"purchases_transform for {day} ended {run.state}"
    assert run.data_interval_start.date().isoformat() == day
    return run


def test_one_build_runs_the_project_and_each_model_has_tasks_for_it_and_its_tests(airflow_db, manifest):
    from airflow.sdk import AssetOrTimeSchedule, CronDataIntervalTimetable
    from cosmos.operators.watcher import DbtConsumerWatcherSensor, DbtProducerWatcherOperator, DbtSourceWatcherOperator

    from purchases.assets import STAGING_PURCHASE_EVENTS

    dag = load_dag("purchases_transform")
    tasks = set(dag.task_ids)
    # One task runs `dbt build` (models, seeds and data tests, not unit tests); the others report on it.
    builders = [t for t in dag.tasks if isinstance(t, DbtProducerWatcherOperator)]
    assert [t.task_id for t in builders] == ["dbt.dbt_producer_watcher"]
    assert builders[0].env == {"DBT_EXCLUDE_RESOURCE_TYPES": "unit_test"}
    assert "--resource-type" not in (builders[0].dbt_cmd_flags or [])  # tests are not left out of the build
    assert all(
        isinstance(dag.get_task(f"dbt.{model}.{kind}"), DbtConsumerWatcherSensor)
        for model in ("stg_purchase_events", "customer_spend")
        for kind in ("run", "test")
    )
    # The loader's table, the one source with a freshness check (found by type: its name follows the models').
    sources = [t.task_id for t in dag.tasks if isinstance(t, DbtSourceWatcherOperator)]
    assert len(sources) == 1, sources
    for root in ("dbt.stg_customers.run", "dbt.spend_thresholds.seed", *sources):
        assert dag.get_task(root).upstream_task_ids == {"dbt.dbt_producer_watcher"}  # they report on the build
        assert dag.get_task(root).trigger_rule == "all_done"
    for model in (
        "stg_purchase_events",
        "stg_customers",
        "customer_purchases",
        "customer_spend_daily",
        "customer_spend",
        "dim_customers",
        "spend_alerts",
    ):
        assert {f"dbt.{model}.run", f"dbt.{model}.test"} <= tasks
        assert dag.get_task(f"dbt.{model}.test").upstream_task_ids == {f"dbt.{model}.run"}
    assert "dbt.customer_purchases.test" in dag.get_task("dbt.customer_spend_daily.run").upstream_task_ids
    # Tests reading several models run after all of them, in tasks of their own.
    assert {"dbt.customer_purchases.test", "dbt.customer_spend.test", "dbt.customer_spend_daily.test"} <= dag.get_task(
        "dbt.customer_spend_reconciles_with_customer_purchases_test"
    ).upstream_task_ids
    docs = dag.get_task("regenerate_dbt_docs")
    assert docs.get_flat_relative_ids(upstream=True) >= tasks - {"regenerate_dbt_docs", "run_status"}
    # The run's state: the last task fails when any task failed, the build included (no retry skips the build:
    # Cosmos skips its second try), and does not count skipped ones (docs not due, a cleared run's build).
    status = dag.get_task("run_status")
    assert dag.leaves == [status]
    assert status.upstream_task_ids == tasks - {"run_status"}
    assert status.trigger_rule == "none_failed"
    assert builders[0].retries == 0
    # A stale source is reported by its task, the build leaves nothing out for it.
    assert builders[0]._freshness_callback is report_stale_sources_without_pruning
    # Scheduled on the staging Asset (loaded and quality-checked events) or daily.
    assert isinstance(dag.timetable, AssetOrTimeSchedule)
    assert dag.timetable.asset_condition == STAGING_PURCHASE_EVENTS
    assert isinstance(dag.timetable.timetable, CronDataIntervalTimetable)
    # Runs overlap, builds do not: one writer per model.
    assert dag.max_active_runs == 3
    assert builders[0].max_active_tis_per_dag == 1
    assert dag.get_task("regenerate_dbt_docs").max_active_tis_per_dag == 1


def test_frequent_runs_regenerate_the_docs_only_when_the_project_changed(tmp_path, monkeypatch, db, dbt_env):
    from purchases import pages
    from purchases.transform.docs import dbt_dsn

    monkeypatch.setenv("DBT_MANIFEST_PATH", str(tmp_path / "manifest.json"))
    db.execute("delete from pages.dbt_docs")
    assert transform.docs_are_due("asset_triggered")  # no page published yet
    (tmp_path / "manifest.json").write_text("{}")
    # Published as the docs task publishes it (dbt's role), 2,000 s after the epoch; the manifest at 1,000 s.
    pages.publish(dbt_dsn(), "dbt_docs", {"index.html": b"<html>"})
    db.execute("update pages.dbt_docs set updated_at = to_timestamp(2000)")
    os.utime(tmp_path / "manifest.json", (1_000, 1_000))
    assert not transform.docs_are_due("asset_triggered")
    assert transform.docs_are_due("scheduled") and transform.docs_are_due("manual")
    assert transform.docs_are_due("backfill")
    os.utime(tmp_path / "manifest.json", (3_000, 3_000))  # the project changed since the page was made
    assert transform.docs_are_due("asset_triggered")
    db.execute("delete from pages.dbt_docs")


@pytest.mark.parametrize(
    "run_type, start, end, expected",
    [
        ("backfill", "2024-03-02T00:00:00+00:00", "2024-03-03T00:00:00+00:00", ("2024-03-02", "2024-03-03")),
        ("scheduled", "2024-03-02T00:00:00+00:00", "2024-03-03T00:00:00+00:00", ("2024-03-02", "2024-03-03")),
        ("manual", "2024-03-02T05:00:00+02:00", "2024-03-03T06:30:00+00:00", ("2024-03-02", "2024-03-04")),
        ("manual", "2024-03-02T00:00:00+00:00", "2024-03-02T00:00:00+00:00", ("2024-03-02", "2024-03-03")),
        ("asset_triggered", "2024-03-02T00:00:00+00:00", "2024-03-03T00:00:00+00:00", ("", "")),
        ("manual", None, None, ("", "")),
    ],
)
def test_backfill_window_covers_the_utc_days_of_the_data_interval(run_type, start, end, expected):
    window = transform.backfill_window(
        run_type, start and datetime.fromisoformat(start), end and datetime.fromisoformat(end)
    )
    assert (window["start_date"], window["end_date"]) == expected


@pytest.mark.slow
def test_a_backfill_rebuilds_exactly_the_days_of_its_interval_idempotently(airflow_db, dbt_env, db, manifest):
    add_customers(dbt_env["dsn"])
    load_purchases(dbt_env["dsn"], FIRST_BATCH)
    transform.run_dbt("build")
    built = daily_rows(db)
    assert {key[2] for key in built} >= {"2024-03-01", "2024-03-02", "2024-03-03", "2024-03-04"}

    # Damage inside each run's window (a lost row, a row that should not exist, a wrong figure) and, outside
    # the windows, a change no test looks at: only a rebuild of exactly those days puts the first right and
    # leaves the second alone. (Damage the tests see must be inside the window of the run that follows it.)
    db.execute(
        "update marts.customer_spend_daily set first_purchase_at = first_purchase_at - interval '1 second'"
        " where spend_date = '2024-03-04'"
    )
    tampered_outside = {k: v for k, v in daily_rows(db).items() if k[2] not in ("2024-03-02", "2024-03-03")}
    db.execute(
        "delete from marts.customer_spend_daily where spend_date = '2024-03-02' and currency = 'EUR' "
        "and customer_id = %s",
        (FIRST_BATCH[4].customer_id,),
    )
    db.execute(
        "insert into marts.customer_spend_daily select customer_id, 'GBP', spend_date, spend, purchase_count,"
        " first_purchase_at, last_purchase_at, daily_threshold, null, daily_threshold_fingerprint,"
        " last_transformed_at from marts.customer_spend_daily where spend_date = '2024-03-02' limit 1"
    )
    from purchases import pages

    docs_before = pages.updated_at(dbt_env["dsn"], "dbt_docs")
    run_for_interval("2024-03-02")
    docs_after = pages.updated_at(dbt_env["dsn"], "dbt_docs")
    # The pipeline's last task regenerated the docs and published them to the warehouse.
    assert docs_after is not None and docs_after != docs_before
    db.execute("update marts.customer_spend_daily set spend = spend + 1 where spend_date = '2024-03-03'")
    run_for_interval("2024-03-03", regenerate_docs=False)

    repaired = daily_rows(db)
    window = {"2024-03-02", "2024-03-03"}
    assert {k: v[0] for k, v in repaired.items() if k[2] in window} == {
        k: v[0] for k, v in built.items() if k[2] in window
    }
    # Outside the window nothing was rewritten, not even the tampered (untested) column.
    assert {k: v for k, v in repaired.items() if k[2] not in window} == tampered_outside
    assert all(repaired[k][1] != built[k][1] for k in repaired if k[2] in window)

    run_for_interval("2024-03-02", regenerate_docs=False)

    again = daily_rows(db)
    assert {k: v[0] for k, v in again.items()} == {k: v[0] for k, v in repaired.items()}
    assert {k for k in again if again[k][1] != repaired[k][1]} == {k for k in again if k[2] == "2024-03-02"}

    # What `airflow backfill create` makes of a date range: one run per day, each rebuilding its own day.
    backfill = subprocess.run(
        [
            str(Path(sys.executable).parent / "airflow"),
            "backfill",
            "create",
            "--dag-id",
            "purchases_transform",
            "--from-date",
            "2024-03-05",
            "--to-date",
            "2024-03-06",
        ],
        env=dict(os.environ),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert backfill.returncode == 0, backfill.stdout + backfill.stderr
    windows = sorted(
        (
            transform.backfill_window(run.run_type, run.data_interval_start, run.data_interval_end)
            for run in backfill_runs()
        ),
        key=lambda window: window["start_date"],
    )
    assert windows == [
        {"start_date": "2024-03-05", "end_date": "2024-03-06"},
        {"start_date": "2024-03-06", "end_date": "2024-03-07"},
    ]


def backfill_runs():
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session
    from airflow.utils.types import DagRunType
    from sqlalchemy import select

    with create_session() as session:
        runs = session.scalars(
            select(DagRun).where(DagRun.dag_id == "purchases_transform", DagRun.run_type == DagRunType.BACKFILL_JOB)
        ).all()
        session.expunge_all()
    return runs
