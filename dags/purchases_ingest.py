"""Kafka `purchases` -> Postgres `staging`: the loader, its quality gate and the replay of rejected records.

Table of contents (the work is in the `purchases` package; README.md, "Loading", explains the design):

* `purchases_ingest` (continuous, one run at a time): read the topic's partitions from the broker, then one
  mapped `load` task per partition loads micro-batches for `window_seconds`, each batch exactly once
  (purchases.load). `announce` emits the `staging_purchase_events_loaded` Asset whenever loaded batches wait
  for the quality gate (also those a failed load task committed).
* `purchases_quality` (on `staging_purchase_events_loaded`): Great Expectations on exactly the rows of the
  batches not passed yet (purchases.check). Passing emits `staging_purchase_events`, which the transform DAG waits for; failing
  fails the task and, through depends_on_past, holds every later check (and so the transform) until the
  data is fixed and the failed task is cleared. It is a DAG of its own so the loader never waits for it.
* `purchases_replay` (manual): re-drive rejected records after a fix (purchases.load.replay).
"""
from __future__ import annotations

import os
from datetime import datetime, timedelta

from airflow.providers.standard.operators.empty import EmptyOperator
from airflow.sdk import Param, dag, task

from purchases.assets import STAGING_PURCHASE_EVENTS, STAGING_PURCHASE_EVENTS_LOADED

START = datetime(2024, 1, 1)
RETRIES = int(os.environ.get("PURCHASES_LOADER_RETRIES", "3"))
RETRY_DELAY = timedelta(seconds=float(os.environ.get("PURCHASES_LOADER_RETRY_DELAY_SECONDS", "10")))
WINDOW_SECONDS = float(os.environ.get("PURCHASES_LOADER_WINDOW_SECONDS", "20"))
BATCH_MAX_EVENTS = int(os.environ.get("PURCHASES_LOADER_BATCH_MAX_EVENTS", "20000"))


@dag(
    dag_id="purchases_ingest",
    schedule="@continuous",
    max_active_runs=1,
    start_date=START,
    catchup=False,
    tags=["purchases", "loader"],
    default_args={"retries": RETRIES, "retry_delay": RETRY_DELAY},
    params={
        "window_seconds": Param(WINDOW_SECONDS, type="number", minimum=0, maximum=600,
                                description="How long each partition's task keeps loading micro-batches."),
        "batch_max_events": Param(BATCH_MAX_EVENTS, type="integer", minimum=1,
                                  description="Most records in one transaction (bounds memory)."),
    },
    doc_md=__doc__,
)
def purchases_ingest():
    @task
    def partitions() -> list[int]:
        from purchases.ingest_tasks import topic_partitions

        return topic_partitions()

    @task(execution_timeout=timedelta(minutes=15), map_index_template="partition {{ task.op_kwargs['partition'] }}")
    def load(partition: int, params=None) -> dict:
        from purchases.ingest_tasks import load as load_partition

        return load_partition(partition, params["window_seconds"], params["batch_max_events"])

    # all_done: rows that some partitions committed are announced (and checked) even if another failed.
    @task(outlets=[STAGING_PURCHASE_EVENTS_LOADED], trigger_rule="all_done", retries=0)
    def announce(results, outlet_events=None) -> dict:
        from purchases.ingest_tasks import announce as announce_waiting_batches

        return announce_waiting_batches(results, outlet_events, STAGING_PURCHASE_EVENTS_LOADED)

    # The run's state follows its leaves; announce (all_done) succeeds even when a load failed, so this leaf
    # makes the run fail visibly whenever any partition's load failed. An EmptyOperator: the scheduler settles
    # it without starting a process.
    every_partition_loaded = EmptyOperator(task_id="every_partition_loaded")

    loads = load.expand(partition=partitions())
    announce(loads)
    loads >> every_partition_loaded


@dag(
    dag_id="purchases_quality",
    schedule=[STAGING_PURCHASE_EVENTS_LOADED],
    max_active_runs=1,
    start_date=START,
    catchup=False,
    tags=["purchases", "quality"],
    default_args={"retries": 2, "retry_delay": timedelta(seconds=10), "depends_on_past": True},
    doc_md=__doc__,
)
def purchases_quality():
    @task(outlets=[STAGING_PURCHASE_EVENTS], execution_timeout=timedelta(minutes=10))
    def quality_gate(outlet_events=None, run_id=None) -> dict:
        from purchases.ingest_tasks import quality_gate as check

        return check(run_id, outlet_events, STAGING_PURCHASE_EVENTS)

    quality_gate()


@dag(
    dag_id="purchases_replay",
    schedule=None,
    start_date=START,
    catchup=False,
    tags=["purchases", "replay"],
    params={
        "reason_contains": Param("", type="string",
                                 description="Only rejections whose reason contains this (empty: all)."),
        "rejection_ids": Param([], type="array", description="Only these rejection_id values (empty: all)."),
        "dry_run": Param(True, type="boolean", description="Report what would be replayed; change nothing."),
    },
    doc_md=__doc__,
)
def purchases_replay():
    @task(outlets=[STAGING_PURCHASE_EVENTS_LOADED])
    def replay(params=None, outlet_events=None) -> dict:
        from purchases.ingest_tasks import replay as replay_rejected

        return replay_rejected(params["reason_contains"], params["rejection_ids"], params["dry_run"],
                               outlet_events, STAGING_PURCHASE_EVENTS_LOADED)

    replay()


ingest_dag = purchases_ingest()
quality_dag = purchases_quality()
replay_dag = purchases_replay()
