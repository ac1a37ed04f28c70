"""purchases_ingest: Kafka topic `purchases` -> Postgres `staging`, micro-batches, each exactly once.

A run starts every PURCHASES_LOADER_RUN_EVERY_SECONDS (20 s), and overlaps the one before: each partition
is handed from a run's task to the next run's between two batches, so there is no moment when nobody loads
it, and still only one loader writes it at a time (purchases/load/writer.py). The work is in purchases/load
(docs/loading.md explains the design):

1. `partitions`: the topic's partitions, from the broker.
2. `load`, one mapped task per partition: takes the partition over from the previous run's task, then
   micro-batches until the next run's task takes it (at most `window_seconds`), each batch one transaction
   (rows, rejections, the batch's record, the stored offset), so a crash leaves nothing half-written.
3. `announce`: emits the Asset `staging_purchase_events_loaded` whenever batches wait for the quality gate
   (also those a failed load task committed before it failed), which starts purchases_quality.
4. `every_partition_loaded`: makes the run fail visibly when any partition's load failed.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.providers.standard.operators.empty import EmptyOperator
from airflow.sdk import Param, dag, task

from purchases.assets import STAGING_PURCHASE_EVENTS_LOADED
from purchases.settings import Settings

settings = Settings()


@dag(
    dag_id="purchases_ingest",
    # Two runs at a time: the one loading, and the next one taking its partitions over.
    schedule=timedelta(seconds=settings.loader_run_every_seconds),
    max_active_runs=2,
    start_date=datetime(2024, 1, 1),
    catchup=False,
    tags=["purchases", "loader"],
    default_args={
        "retries": settings.loader_retries,
        "retry_delay": timedelta(seconds=settings.loader_retry_delay_seconds),
    },
    params={
        "window_seconds": Param(
            settings.loader_window_seconds,
            type="number",
            minimum=0,
            maximum=600,
            description="Longest each partition's task keeps loading micro-batches (it ends sooner when the "
            "next run's task takes the partition over).",
        ),
        "batch_max_events": Param(
            settings.loader_batch_max_events,
            type="integer",
            minimum=1,
            description="Most records in one transaction (bounds memory).",
        ),
    },
    doc_md=__doc__,
)
def purchases_ingest():
    @task
    def partitions() -> list[int]:
        from purchases.load.tasks import topic_partitions

        return topic_partitions()

    @task(execution_timeout=timedelta(minutes=15), map_index_template="partition {{ task.op_kwargs['partition'] }}")
    def load(partition: int, params=None) -> dict:
        from purchases.load.tasks import load_partition

        return load_partition(partition, params["window_seconds"], params["batch_max_events"])

    # all_done: batches some partitions committed are announced (and checked) even if another failed.
    @task(outlets=[STAGING_PURCHASE_EVENTS_LOADED], trigger_rule="all_done", retries=0)
    def announce(results, outlet_events=None) -> dict:
        from purchases.load.tasks import announce

        return announce(results, outlet_events, STAGING_PURCHASE_EVENTS_LOADED)

    # The run's state follows its leaves; announce (all_done) succeeds even when a load failed, so this leaf
    # makes the run fail visibly whenever any partition's load failed. An EmptyOperator: the scheduler settles
    # it without starting a process.
    every_partition_loaded = EmptyOperator(task_id="every_partition_loaded")

    loads = load.expand(partition=partitions())
    announce(loads)
    loads >> every_partition_loaded


purchases_ingest()
