"""purchases_quality: the quality gate between staging and the marts (Great Expectations).

Runs on the Asset `staging_purchase_events_loaded`. One task checks the rows of every batch not passed yet
(purchases/check; the suite is the event contract's rules) and marks them passed, so the marts may read
them; passing emits `staging_purchase_events`, which the transform DAG waits for. Failing fails the task at
once (no retry: bad rows do not get better) and, through depends_on_past, holds every later check (and so
the transform) until the rows are fixed and the failed task is cleared. A DAG of its own, so the loader
never waits for it.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import dag, task

from purchases.assets import STAGING_PURCHASE_EVENTS, STAGING_PURCHASE_EVENTS_LOADED


@dag(
    dag_id="purchases_quality",
    schedule=[STAGING_PURCHASE_EVENTS_LOADED],
    max_active_runs=1,
    start_date=datetime(2024, 1, 1),
    catchup=False,
    tags=["purchases", "quality"],
    default_args={"retries": 2, "retry_delay": timedelta(seconds=10), "depends_on_past": True},
    doc_md=__doc__,
)
def purchases_quality():
    @task(outlets=[STAGING_PURCHASE_EVENTS], execution_timeout=timedelta(minutes=10))
    def quality_gate(outlet_events=None, run_id=None) -> dict:
        from purchases.check.tasks import quality_gate

        return quality_gate(run_id, outlet_events, STAGING_PURCHASE_EVENTS)

    quality_gate()


purchases_quality()
