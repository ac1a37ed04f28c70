"""purchases_transform: staging -> marts with dbt (Cosmos, watcher mode): one `dbt build`, one task per model.

Runs when the loader's quality gate marks new events in staging (the Asset), and daily. A daily, manual or
backfill run also rebuilds exactly the UTC days of its data interval, so `airflow backfill create
--dag-id purchases_transform --from-date ... --to-date ...` repairs those days of customer_spend_daily,
idempotently. Then a task regenerates the dbt docs that the Airflow UI's "dbt docs" menu entry shows
(on scheduled, manual and backfill runs, and when the project changed), and the last one, `run_status`, makes
the run fail when any task failed, the `dbt build` task included.
Logic lives in purchases/transform/ and the dbt project in dbt/.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from airflow.sdk import AssetOrTimeSchedule, CronDataIntervalTimetable, dag, task
from cosmos import DbtTaskGroup

from purchases.assets import STAGING_PURCHASE_EVENTS
from purchases.transform.backfill import DAG_MACROS
from purchases.transform.cosmos import cosmos_task_group_args, end_with_the_run_status, report_after_the_build


@dag(
    dag_id="purchases_transform",
    schedule=AssetOrTimeSchedule(
        timetable=CronDataIntervalTimetable("@daily", timezone="UTC"), assets=STAGING_PURCHASE_EVENTS
    ),
    start_date=datetime(2024, 1, 1, tzinfo=UTC),
    catchup=False,
    # Three runs at a time, one `dbt build` at a time: a run's build starts as soon as the previous run's
    # build has ended, while the runs before still have their model tasks report on theirs (as long as the
    # build or longer under load, level after level of the model graph). The builds never overlap (the build
    # task's max_active_tis_per_dag=1, purchases/transform/cosmos.py), so each model has one writer, as its
    # watermarks need (and each model's pre-hook lock makes sure).
    max_active_runs=3,
    user_defined_macros=DAG_MACROS,
    # The retries left, and why none of them can turn a failed build into a green run:
    # - the `dbt build` task has none (purchases/transform/cosmos.py): Cosmos skips its second try instead
    #   of building, and that skip hid a failed build.
    # - a model, seed, source or test task (a Cosmos consumer) does not re-read the build on a retry: its
    #   second try runs its own node alone (`dbt run/seed/test --select <node>`, `dbt source freshness`;
    #   poke -> _handle_retry -> _fallback_to_non_watcher_run, cosmos/operators/_watcher/base.py). After a
    #   failed build the failed model's task runs it again 30 s later, which may get past a transient error but
    #   cannot make the run green: run_status sees the build task, which stays failed. What they are kept for
    #   is a cleared run (the UI's Clear on a failed run): the build task's second try skips itself and restores
    #   the failed build's results, a task that never ran before then reports the old result on its first try
    #   ("failed", for a model dbt skipped after its parent failed), and only its retry runs the model (observed:
    #   tests/dbt/test_transform_run_status.py). Without that retry, a run cleared after a fix would stay red.
    # - regenerate_dbt_docs runs only when everything before it succeeded; a retry repeats `dbt docs generate`.
    # - run_status settles from the states of the tasks before it: there is nothing to retry.
    default_args={"retries": 1, "retry_delay": timedelta(seconds=30)},
    tags=["purchases", "dbt"],
    doc_md=__doc__,
)
def purchases_transform():
    marts = DbtTaskGroup(group_id="dbt", **cosmos_task_group_args())
    report_after_the_build(marts)

    @task.run_if(lambda context: docs_due(context["dag_run"].run_type))
    @task(max_active_tis_per_dag=1)  # one `dbt docs generate` at a time: it replaces the manifest
    def regenerate_dbt_docs() -> str:
        from purchases.transform.docs import generate_docs

        return str(generate_docs())

    docs = regenerate_dbt_docs()
    marts >> docs
    end_with_the_run_status(marts, docs)


def docs_due(run_type) -> bool:
    from purchases.transform.docs import docs_are_due

    return docs_are_due(run_type)


purchases_transform()
