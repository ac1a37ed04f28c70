"""The `purchases_transform` run's state tells the truth: a failed `dbt build` fails the DAG run, on its first
try and after the run is cleared (the build task's second try), and the first daily run on a fresh, empty
warehouse (a stale source) builds the marts and succeeds.

Real `dag.test()` runs against the Airflow metadata database, real dbt, real Postgres. Each test has a
warehouse database and a copy of the dbt project of its own: one adds failing models to it, the other needs
marts that were never built.
"""

from __future__ import annotations

import secrets
import shutil
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from unittest import mock

import psycopg
import pytest
from dbt_test_data import FIRST_BATCH, add_customers, load_purchases
from psycopg.conninfo import conninfo_to_dict
from support import load_dag, prepare_warehouse, warehouse_environment

from purchases import transform

ROOT = Path(__file__).resolve().parents[2]
BUILD = "dbt.dbt_producer_watcher"
MARTS = ("customer_purchases", "customer_spend", "customer_spend_daily", "dim_customers", "spend_alerts")
# Models added to a copy of the project. The first fails whenever it runs (a constant division by zero),
# downstream of a real mart so it runs late in the build; the second reads a table that the test creates only
# after the first run (like the missing marts of the reported bug), the third depends on the second.
INJECTED_MODELS = {
    "failing_on_purpose": "select customer_id, 1 / 0 as never from {{ ref('customer_spend') }}\n",
    "reads_a_missing_table": "select note from public.created_after_the_first_run\n",
    "after_the_missing_table": "select note from {{ ref('reads_a_missing_table') }}\n",
}


@pytest.fixture
def own_warehouse(dbt_env, airflow_db, tmp_path, monkeypatch):
    """A new warehouse database (the app and staging tables, nothing loaded, no marts) and a copy of the dbt
    project, with the environment pointing dbt, the DAG and the docs at them for one test."""
    from purchases.settings import postgres_url
    from purchases.warehouse import drop_database

    name = f"{conninfo_to_dict(dbt_env['dsn'])['dbname']}_{secrets.token_hex(3)}"  # beside the folder's database
    dsn = prepare_warehouse(postgres_url(dbt_env["dsn"], dbname=name))
    project = tmp_path / "project"
    shutil.copytree(ROOT / "dbt", project, ignore=shutil.ignore_patterns("target", "logs", "dbt_packages"))
    for key, value in {
        **warehouse_environment(dsn),
        "DBT_PROJECT_DIR": str(project),
        "DBT_MANIFEST_PATH": str(tmp_path / "manifest" / "manifest.json"),
        "DBT_DOCS_DIR": str(tmp_path / "docs"),
    }.items():
        monkeypatch.setenv(key, value)
    try:
        yield {"dsn": dsn, "project": project}
    finally:
        drop_database(dsn)


@contextmanager
def runs_made_by(make_run):
    """dag.test() creates its run with get_or_create_dagrun (deleting any run of the same logical date, then a
    new manual one); `make_run(dag=, logical_date=, session=, ...)` returns the run it drives instead."""
    from airflow.models import dagrun

    with mock.patch.object(dagrun, "get_or_create_dagrun", make_run):
        yield


def first_scheduled_run(dag):
    """The first run the scheduler makes for the DAG (no run before it, catchup off: the last complete UTC
    day), made as SchedulerJobRunner._create_dag_runs makes it, run to its end by dag.test()'s loop."""
    from airflow.models.dagrun import DagRun
    from airflow.sdk import timezone
    from airflow.serialization.serialized_objects import DagSerialization
    from airflow.utils.state import DagRunState
    from airflow.utils.types import DagRunTriggeredByType, DagRunType
    from sqlalchemy import select

    info = DagSerialization.deserialize_dag(DagSerialization.serialize_dag(dag)).next_dagrun_info(
        last_automated_run_info=None
    )

    def scheduled(*, dag, session, **_):
        for stale in session.scalars(
            select(DagRun).where(DagRun.dag_id == dag.dag_id, DagRun.logical_date == info.logical_date)
        ):
            session.delete(stale)
        session.commit()
        return dag.create_dagrun(
            run_id=dag.timetable.generate_run_id(
                run_type=DagRunType.SCHEDULED,
                run_after=info.run_after,
                data_interval=info.data_interval,
                partition_key=info.partition_key,
            ),
            logical_date=info.logical_date,
            data_interval=info.data_interval,
            run_after=info.run_after,
            run_type=DagRunType.SCHEDULED,
            triggered_by=DagRunTriggeredByType.TIMETABLE,
            state=DagRunState.RUNNING,
            start_date=timezone.utcnow(),
            session=session,
        )

    with runs_made_by(scheduled):
        return dag.test(logical_date=info.logical_date)


def clear_and_rerun(dag, run):
    """The UI's Clear on a finished run (perform_clear_dag_run: every task instance of the run back to no
    state, the run queued), the scheduler starting the queued run, and dag.test()'s loop running it to its end.
    dag.test() alone cannot: it deletes the run of its logical date and makes a new one."""
    from airflow.models.dagbag import DBDagBag
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session
    from airflow.utils.state import DagRunState
    from sqlalchemy import select

    with create_session() as session:
        stored = session.scalar(select(DagRun).where(DagRun.dag_id == run.dag_id, DagRun.run_id == run.run_id))
        DBDagBag().get_dag_for_run(stored, session=session).clear(run_id=run.run_id, task_ids=None, session=session)

    def cleared(*, dag, session, **_):
        again = session.scalar(select(DagRun).where(DagRun.dag_id == dag.dag_id, DagRun.run_id == run.run_id))
        assert again.state == DagRunState.QUEUED
        again.dag = dag
        again.set_state(DagRunState.RUNNING)
        session.commit()
        return again

    with runs_made_by(cleared):
        return dag.test(logical_date=run.logical_date)


def task_states(run) -> dict[str, tuple[str | None, int]]:
    """task_id -> (state, try_number) of the run's task instances."""
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        return {
            ti.task_id: (ti.state, ti.try_number)
            for ti in session.scalars(
                select(TaskInstance).where(TaskInstance.dag_id == run.dag_id, TaskInstance.run_id == run.run_id)
            )
        }


def reported_status(run, unique_id: str):
    """The status of a dbt node the build task pushed for the node's task to report."""
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session
    from cosmos.operators._watcher.state import get_status_xcom_key
    from sqlalchemy import select

    with create_session() as session:
        row = session.scalars(
            select(XComModel).where(
                XComModel.dag_id == run.dag_id,
                XComModel.run_id == run.run_id,
                XComModel.task_id == BUILD,
                XComModel.key == get_status_xcom_key(unique_id),
            )
        ).one()
        return XComModel.deserialize_value(row)["status"]


def existing_relations(dsn: str, names) -> set[str]:
    with psycopg.connect(dsn) as conn:
        return {
            name
            for name in names
            if conn.execute("select to_regclass(%s)", (f"marts.{name}",)).fetchone()[0] is not None
        }


@pytest.mark.slow
def test_a_failed_build_fails_the_run_and_still_does_after_the_run_is_cleared(own_warehouse):
    from airflow.utils.state import DagRunState, TaskInstanceState

    add_customers(own_warehouse["dsn"])
    load_purchases(own_warehouse["dsn"], FIRST_BATCH)  # the known purchases of the other dbt tests
    for name, sql in INJECTED_MODELS.items():
        (own_warehouse["project"] / "models" / "marts" / f"{name}.sql").write_text(sql)
    transform.parse_project()
    dag = load_dag("purchases_transform")
    # Models without tests get one task each (`<model>_run`), not a group of two.
    failing, missing, after_missing = (f"dbt.{name}_run" for name in INJECTED_MODELS)
    assert {failing, missing, after_missing} <= set(dag.task_ids)

    run = dag.test(logical_date=datetime(2024, 6, 2, tzinfo=UTC))
    states = task_states(run)
    assert run.state == DagRunState.FAILED, states
    assert states[BUILD] == (TaskInstanceState.FAILED, 1)  # one try: no retry that would skip it
    assert states[failing][0] == states[missing][0] == TaskInstanceState.FAILED
    assert states[after_missing][0] == TaskInstanceState.UPSTREAM_FAILED
    assert states["run_status"][0] == TaskInstanceState.UPSTREAM_FAILED
    # The rest of the build did its work, and its tasks say so.
    assert states["dbt.customer_spend.run"][0] == states["dbt.spend_alerts.test"][0] == TaskInstanceState.SUCCESS
    assert existing_relations(own_warehouse["dsn"], MARTS) == set(MARTS)

    # One of the two problems is fixed, then the run is cleared as in the UI: the build task's second try skips
    # itself (Cosmos does not build twice) and each model task runs its own model. The fixed model and the one
    # after it are built, the other still fails, and so does the run.
    with psycopg.connect(own_warehouse["dsn"], autocommit=True) as conn:
        conn.execute("create table public.created_after_the_first_run as select 'here now' as note")
        conn.execute("grant select on public.created_after_the_first_run to purchases_dbt")  # dbt's own role
    again = clear_and_rerun(dag, run)
    states = task_states(again)
    assert again.run_id == run.run_id
    assert again.state == DagRunState.FAILED, states
    assert states[BUILD] == (TaskInstanceState.SKIPPED, 2)
    assert states[failing][0] == TaskInstanceState.FAILED and states[failing][1] > 2
    assert states["run_status"][0] == TaskInstanceState.UPSTREAM_FAILED
    assert states[missing][0] == states["dbt.customer_spend.run"][0] == TaskInstanceState.SUCCESS
    # A task that never ran before reports, on its first try, the old build's result ("failed": skipped after
    # its parent failed), which the build task's skipped try restored; its retry ran the model. So the model
    # tasks keep their retry (dags/purchases_transform.py).
    assert states[after_missing] == (TaskInstanceState.SUCCESS, 2)
    assert existing_relations(own_warehouse["dsn"], ["after_the_missing_table"]) == {"after_the_missing_table"}


@pytest.mark.slow
def test_the_first_daily_run_on_an_empty_warehouse_builds_the_marts(own_warehouse):
    from airflow.utils.state import DagRunState, TaskInstanceState
    from airflow.utils.types import DagRunType
    from cosmos.operators.watcher import DbtSourceWatcherOperator

    transform.parse_project()
    assert existing_relations(own_warehouse["dsn"], MARTS) == set()  # never built; staging has no event
    dag = load_dag("purchases_transform")
    sources = [task for task in dag.tasks if isinstance(task, DbtSourceWatcherOperator)]
    assert len(sources) == 1  # the loader's table, the one source with a freshness check

    run = first_scheduled_run(dag)
    states = task_states(run)
    assert run.run_type == DagRunType.SCHEDULED
    assert run.state == DagRunState.SUCCESS, states
    # Every task did its part: nothing skipped for the stale (empty) source, whose task reports it.
    assert {task: state for task, (state, _) in states.items() if state != TaskInstanceState.SUCCESS} == {}
    assert reported_status(run, sources[0].model_unique_id) == "warn"
    assert existing_relations(own_warehouse["dsn"], MARTS) == set(MARTS)
    assert (transform.docs_dir() / "index.html").exists()  # a scheduled run regenerates the docs
