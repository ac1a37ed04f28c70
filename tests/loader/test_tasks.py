"""The glue between the DAGs and the loader: what `announce` tells the quality gate."""

from __future__ import annotations

import psycopg
import pytest
from support import OutletEvents

from purchases.assets import STAGING_PURCHASE_EVENTS_LOADED
from purchases.load.tasks import announce


def set_waiting_batches(dsn: str, waiting: bool) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("update staging.loaded_batches set checked_at = now() where checked_at is null")
        if waiting:
            conn.execute("insert into staging.loaded_batches (kafka_topic, kafka_partition, loaded) values ('t', 0, 4)")


def test_announce_skips_when_no_batch_waits_for_the_gate(warehouse_dsn):
    from airflow.sdk.exceptions import AirflowSkipException

    set_waiting_batches(warehouse_dsn, waiting=False)
    with pytest.raises(AirflowSkipException, match="no batch waits for the quality gate.*'rejected': 3"):
        announce(
            [{"partition": 0, "next_offset": 7, "loaded": 0, "rejected": 3}, None],
            OutletEvents(),
            STAGING_PURCHASE_EVENTS_LOADED,
        )


def test_announce_tells_the_gate_whenever_batches_wait_even_if_every_load_task_failed(warehouse_dsn):
    set_waiting_batches(warehouse_dsn, waiting=True)
    outlets = OutletEvents()
    summary = announce([None, None], outlets, STAGING_PURCHASE_EVENTS_LOADED)
    assert summary == {"loaded": 0, "rejected": 0, "partitions": {}}
    assert outlets[STAGING_PURCHASE_EVENTS_LOADED].extra == summary
    loaded = {"partition": 1, "next_offset": 4, "loaded": 4, "rejected": 1}
    assert announce([loaded, None], OutletEvents(), STAGING_PURCHASE_EVENTS_LOADED) == {
        "loaded": 4,
        "rejected": 1,
        "partitions": {1: 4},
    }
    set_waiting_batches(warehouse_dsn, waiting=False)
