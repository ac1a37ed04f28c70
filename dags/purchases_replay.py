"""purchases_replay (manual): re-drive rejected records after a fix, without duplicates.

Trigger it with the params below (dry_run is on by default: turn it off to load). One task
(purchases/load/replay.py) checks the chosen rejected records again and stores those that pass now, as a
batch of their own; a replay that loaded rows emits `staging_purchase_events_loaded`, so the quality gate
and the transform follow.
"""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import Param, dag, task

from purchases.assets import STAGING_PURCHASE_EVENTS_LOADED


@dag(
    dag_id="purchases_replay",
    schedule=None,
    start_date=datetime(2024, 1, 1),
    catchup=False,
    tags=["purchases", "replay"],
    params={
        "reason_contains": Param(
            "", type="string", description="Only rejections whose reason contains this (empty: all)."
        ),
        "rejection_ids": Param([], type="array", description="Only these rejection_id values (empty: all)."),
        "dry_run": Param(True, type="boolean", description="Report what would be replayed; change nothing."),
    },
    doc_md=__doc__,
)
def purchases_replay():
    @task(outlets=[STAGING_PURCHASE_EVENTS_LOADED])
    def replay(params=None, outlet_events=None) -> dict:
        from purchases.load.tasks import replay

        return replay(
            params["reason_contains"],
            params["rejection_ids"],
            params["dry_run"],
            outlet_events,
            STAGING_PURCHASE_EVENTS_LOADED,
        )

    replay()


purchases_replay()
