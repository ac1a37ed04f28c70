"""Airflow Assets shared by the DAGs: one definition, so producer and consumer DAGs name the same thing.

`STAGING_PURCHASE_EVENTS` is what the transform DAG schedules on: it gets an event only after newly loaded
rows passed the Great Expectations quality gate. `STAGING_PURCHASE_EVENTS_LOADED` is the loader's own
signal (rows committed, not yet checked) that starts the quality gate.
"""

from __future__ import annotations

from airflow.sdk import Asset

STAGING_PURCHASE_EVENTS = Asset(
    name="staging_purchase_events", uri="postgres://warehouse/purchases/staging/purchase_events"
)

# Name only: it marks an event in the pipeline, not a table of its own.
STAGING_PURCHASE_EVENTS_LOADED = Asset(name="staging_purchase_events_loaded")
