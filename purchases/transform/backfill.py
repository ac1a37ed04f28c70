"""Backfill windows: the UTC days a scheduled, manual or backfill run of the transform DAG rebuilds."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from typing import Any


def _utc_day(moment: datetime, *, round_up: bool) -> date:
    moment = moment.astimezone(UTC)
    day = moment.date()
    if round_up and moment.time() != time(0):
        day += timedelta(days=1)
    return day


def backfill_window(
    run_type: Any, data_interval_start: datetime | None, data_interval_end: datetime | None
) -> dict[str, str]:
    """dbt vars for a DAG run: the UTC days its data interval covers, or none for an asset-triggered run.

    Scheduled, manual and backfill runs rebuild exactly the days of their data interval (a daily run
    re-checks the day that just ended); runs triggered by newly loaded events only do the incremental work.
    """
    run_type = getattr(run_type, "value", run_type)
    if run_type == "asset_triggered" or data_interval_start is None or data_interval_end is None:
        return {"start_date": "", "end_date": ""}
    start = _utc_day(data_interval_start, round_up=False)
    end = _utc_day(data_interval_end, round_up=True)
    if end <= start:  # an empty interval still means "the day it is in"
        end = start + timedelta(days=1)
    return {"start_date": start.isoformat(), "end_date": end.isoformat()}


# Templated in the DAG (`vars` of the dbt build): {{ dbt_backfill_window(dag_run.run_type, ...) }}.
DAG_MACROS = {"dbt_backfill_window": backfill_window}
