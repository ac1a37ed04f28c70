"""Anything at all written straight into the topic: arbitrary bytes, arbitrary JSON (deep nesting, huge numbers,
odd keys and strings) and events with one field gone wrong, through the real broker, loader and Postgres.
Each record ends in staging or in the rejected table, exactly once; a good event written after them on the
same partition is loaded; what was stored reads back and passes the quality gate.

`make fuzz` runs many more examples (HYPOTHESIS_PROFILE=fuzz).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from strategies import json_documents, mutated_events, valid_event_documents
from support import examples

from purchases.load import LoaderConfig, load_partition

from .helpers import create_topic, make_event, produce

NOW = datetime.now(UTC)
# Events of a customer the warehouse knows, so that generated events are stored, not only rejected.
FUZZ_CUSTOMER = uuid.UUID("f0220000-0000-4000-8000-00000000f022")
CUSTOMER_IDS = st.sampled_from([str(FUZZ_CUSTOMER), str(FUZZ_CUSTOMER).upper()]) | st.uuids().map(str)
RECORDS = st.one_of(
    st.binary(max_size=3000),
    json_documents(),
    mutated_events(NOW, CUSTOMER_IDS),
    valid_event_documents(NOW, CUSTOMER_IDS),
    st.none(),
)


@pytest.fixture(scope="module")
def fuzz_topic(broker):
    return create_topic(broker.bootstrap)


@pytest.fixture(scope="module")
def fuzz_customer(warehouse_dsn):
    with psycopg.connect(warehouse_dsn) as conn:
        conn.execute(
            "insert into app.customers (customer_id, username, password_hash) values (%s, 'fuzz', 'x') "
            "on conflict do nothing",
            (FUZZ_CUSTOMER,),
        )
    return FUZZ_CUSTOMER


def outcome_by_offset(dsn: str, topic: str, first: int, end: int) -> dict[int, list[str]]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "select kafka_offset, 'staged' from staging.purchase_events where kafka_topic = %s "
            "and kafka_offset >= %s and kafka_offset < %s union all "
            "select kafka_offset, 'rejected' from staging.purchase_events_rejected where kafka_topic = %s "
            "and kafka_offset >= %s and kafka_offset < %s",
            (topic, first, end, topic, first, end),
        ).fetchall()
    found: dict[int, list[str]] = {}
    for offset, where in rows:
        found.setdefault(offset, []).append(where)
    return found


@settings(
    max_examples=examples(15),
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example],
)
@given(values=st.lists(RECORDS, min_size=1, max_size=12), keys=st.lists(st.none() | st.binary(max_size=50)))
def test_every_record_ends_in_staging_or_rejected_and_the_next_good_event_loads(
    broker, warehouse_dsn, fuzz_topic, fuzz_customer, values, keys
):
    with psycopg.connect(warehouse_dsn) as conn:
        first = conn.execute(
            "select coalesce(max(next_offset), 0) from staging.kafka_offsets where kafka_topic = %s", (fuzz_topic,)
        ).fetchone()[0]
    good = make_event(fuzz_customer)
    records = [(keys[i] if i < len(keys) else None, value) for i, value in enumerate(values)]
    produce(broker.bootstrap, fuzz_topic, records + [(good.kafka_key(), good.to_bytes())])
    end = first + len(records) + 1

    result = load_partition(
        LoaderConfig(broker.bootstrap, warehouse_dsn, fuzz_topic), 0, window_seconds=60, stop_when_idle=True
    )

    assert result.next_offset == end
    found = outcome_by_offset(warehouse_dsn, fuzz_topic, first, end)
    assert all(len(places) == 1 for places in found.values()), found
    # A repeated event id is stored once, at its first copy, and not rejected: the loader counts it.
    assert len(found) + result.duplicates == len(records) + 1
    assert (result.loaded, result.rejected) == (
        sum(p == ["staged"] for p in found.values()),
        sum(p == ["rejected"] for p in found.values()),
    )
    assert found[end - 1] == ["staged"], "the good event after the records is loaded"
    with psycopg.connect(warehouse_dsn) as conn:
        # What was stored reads back, typed, the way the API and dbt read it.
        conn.execute(
            "select event_id, customer_id, product_name, description, quantity, unit_price, currency, "
            "purchased_at, extra, quantity * unit_price from staging.purchase_events "
            "where kafka_topic = %s",
            (fuzz_topic,),
        ).fetchall()
        conn.execute(
            "select reason, raw_key, raw_value from staging.purchase_events_rejected where kafka_topic = %s",
            (fuzz_topic,),
        ).fetchall()


def test_what_the_fuzzed_records_left_in_staging_passes_the_quality_gate(
    warehouse_dsn, fuzz_topic, monkeypatch, tmp_path
):
    """Run after the fuzz above: the gate's expectations are the contract's, so whatever the loader stored
    passes them. (Batches of other tests in this database are passed first: this gate run is the fuzz's.)"""
    from purchases.check import run_quality_gate

    monkeypatch.setenv("GX_DATA_DOCS_DIR", str(tmp_path / "docs"))
    with psycopg.connect(warehouse_dsn, autocommit=True) as conn:
        conn.execute(
            "update staging.loaded_batches set checked_at = now() where checked_at is null and kafka_topic <> %s",
            (fuzz_topic,),
        )
        stored = conn.execute(
            "select count(*) from staging.purchase_events where kafka_topic = %s", (fuzz_topic,)
        ).fetchone()[0]
    assert stored > 0
    result = run_quality_gate(warehouse_dsn)
    assert result.success and result.rows == stored
