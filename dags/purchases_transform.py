"""purchases_transform: staging -> marts with dbt (Cosmos, watcher mode): one `dbt build`, one task per model.

Runs when the loader's quality gate marks new events in staging (the Asset), and daily. A daily, manual or
backfill run also rebuilds exactly the UTC days of its data interval, so `airflow backfill create
--dag-id purchases_transform --from-date ... --to-date ...` repairs those days of customer_spend_daily,
idempotently. The last task regenerates the dbt docs that the Airflow UI's "dbt docs" menu entry shows
(on scheduled, manual and backfill runs, and when the project changed).
Logic lives in purchases/transform.py and the dbt project in dbt/.
"""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

from airflow.sdk import AssetOrTimeSchedule, CronDataIntervalTimetable, dag, task
from cosmos import DbtTaskGroup

from purchases import transform
from purchases.assets import STAGING_PURCHASE_EVENTS


@dag(
    dag_id="purchases_transform",
    schedule=AssetOrTimeSchedule(timetable=CronDataIntervalTimetable("@daily", timezone="UTC"),
                                 assets=STAGING_PURCHASE_EVENTS),
    start_date=datetime(2024, 1, 1, tzinfo=timezone.utc),
    catchup=False,
    # Watermarks assume one writer per model: runs never overlap.
    max_active_runs=1,
    user_defined_macros=transform.DAG_MACROS,
    default_args={"retries": 1, "retry_delay": timedelta(seconds=30)},
    tags=["purchases", "dbt"],
    doc_md=__doc__,
)
def purchases_transform():
    marts = DbtTaskGroup(group_id="dbt", **transform.cosmos_task_group_args())
    transform.report_after_the_build(marts)

    @task.run_if(lambda context: transform.docs_are_due(context["dag_run"].run_type))
    @task
    def regenerate_dbt_docs() -> str:
        return str(transform.generate_docs())

    marts >> regenerate_dbt_docs()


purchases_transform()
