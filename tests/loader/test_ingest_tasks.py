"""The glue between the DAGs and the loader, with the Task SDK's own types (no scheduler in dag.test())."""
from __future__ import annotations

from datetime import datetime, timezone

import pytest

from purchases.assets import STAGING_PURCHASE_EVENTS_LOADED
from purchases.ingest_tasks import announce, increments_to_check


def triggering_events(*extras):
    """What a scheduled purchases_quality run gets as `triggering_asset_events`."""
    from airflow.sdk.execution_time.comms import AssetEventDagRunReferenceResult
    from airflow.sdk.execution_time.context import TriggeringAssetEventsAccessor

    asset = {"name": STAGING_PURCHASE_EVENTS_LOADED.name, "uri": STAGING_PURCHASE_EVENTS_LOADED.uri, "extra": {}}
    return TriggeringAssetEventsAccessor.build([
        AssetEventDagRunReferenceResult(asset=asset, extra=extra, source_task_id="announce",
                                        source_dag_id="purchases_ingest", source_run_id=f"run{n}",
                                        source_map_index=-1, source_aliases=[], timestamp=datetime.now(timezone.utc))
        for n, extra in enumerate(extras)])


def test_the_quality_gate_checks_every_increment_announced_since_its_last_run():
    first = {"topic": "purchases", "partition": 0, "start_offset": 0, "next_offset": 10, "loaded": 10}
    second = {"topic": "purchases", "partition": 1, "start_offset": 5, "next_offset": 7, "loaded": 2}
    replayed = {"kind": "replay", "replayed_at": "2026-01-01T00:00:00+00:00", "loaded": 1}
    events = triggering_events({"increments": [first]}, {"increments": [second, replayed]})
    assert increments_to_check(events, []) == [first, second, replayed]
    assert increments_to_check(triggering_events(), [first]) == [first]  # a manual run's param


def test_announce_skips_when_nothing_was_loaded_and_carries_the_ranges_otherwise():
    from airflow.sdk.exceptions import AirflowSkipException

    class OutletEvents(dict):
        def __missing__(self, key):
            self[key] = type("Event", (), {"extra": None})()
            return self[key]

    with pytest.raises(AirflowSkipException, match="3 records rejected"):
        announce([{"loaded": 0, "rejected": 3}, None], OutletEvents(), STAGING_PURCHASE_EVENTS_LOADED)
    outlets = OutletEvents()
    loaded = {"topic": "t", "partition": 1, "start_offset": 0, "next_offset": 4, "loaded": 4, "rejected": 1}
    summary = announce([loaded, {"loaded": 0, "rejected": 0}], outlets, STAGING_PURCHASE_EVENTS_LOADED)
    assert summary == {"kind": "offsets", "increments": [loaded], "rows": 4, "rejected": 1}
    assert outlets[STAGING_PURCHASE_EVENTS_LOADED].extra == summary
