"""The capacity plan's arithmetic (bench/capacity.py), on a small hand-made set of figures whose answers can be
worked out by hand (pure logic; the figures themselves come from `make bench-loader`)."""

from __future__ import annotations

import copy

import pytest

from bench import capacity


def cell(partitions: int, workers: int, events_per_s: int, broker_cpu_s: float = 0.2) -> dict:
    return {
        "partitions": partitions,
        "workers": workers,
        "events": 100_000,
        "events_per_s": events_per_s,
        "rounds_events_per_s": [events_per_s],
        "process_sustained_events_per_s_median": 20_000,
        "cpu_s": {"loader": 1.0, "postgres": 2.0, "postgres_other_databases": 0.0, "broker": broker_cpu_s},
        "produce": {"events_per_s": 50_000, "broker_cpu_s": 0.3, "producer_cpu_s": 1.0},
        "wal_bytes_per_event": 2000,
        "machine_busy_fraction": 0.9,
        "other_cpu_s": 0.5,
        "load_average_1m": 1.5,
    }


FIGURES = {
    # Today's peak is the higher of the two: 10,000 purchases/s.
    "ingest_batch_purchases_per_s": {"value": 10_000, "measured_at": "2026-01-01T00:00:00+00:00"},
    "ingest_rps": {"value": 2_000, "measured_at": "2026-01-01T00:00:00+00:00"},
    "loader_events_per_s": {
        "value": 25_000,
        "partitions": 3,
        "events": 1_000_000,
        # 10 µs of loader CPU and 20 µs of Postgres CPU per event; 2,000 bytes of WAL, 300 of staging.
        "load_cpu": {"cpu_s": {"loader": 10.0, "postgres": 20.0, "broker": 1.0}},
        "wal_bytes_per_event": 2000,
        "staging_bytes_per_event": 300,
    },
    "loader_capacity": {
        "value": 20_000,  # one partition task, sustained
        "single_partition_events_per_s": 18_000,
        "matrix_events": 100_000,
        "matrix_rounds": 1,
        # Broker: (0.2 + 0.3) s per 100,000 events in each cell = 5 µs per event.
        "cells": [cell(1, 1, 18_000), cell(2, 1, 17_000), cell(2, 2, 30_000)],
        "copy_ceiling": {
            "rows": 1_000_000,
            "one_table_1_stream_rows_per_s": 40_000,
            "one_table_2_streams_rows_per_s": 60_000,
            "partitioned_2_streams_rows_per_s": 70_000,
            "tries": {"one_table_1_stream": [40_000]},
        },
    },
    # At least 10,000 new events / 0.5 s = 20,000 events/s.
    "dbt_incremental_s": {"value": 0.5, "new_events": 10_000},
}


@pytest.fixture
def plan():
    return capacity.plan(copy.deepcopy(FIGURES), cpus=2)


def test_the_peak_is_the_highest_accepted_purchases_per_second(plan):
    assert plan["peak"]["events_per_s"] == 10_000
    assert plan["peak"]["figure"] == "ingest_batch_purchases_per_s"


def test_cpu_per_event_comes_from_the_big_run_and_the_brokers_from_the_cells(plan):
    assert plan["cpu_us_per_event"] == {"loader": 10.0, "postgres": 20.0, "broker": 5.0}


def test_partitions_and_slots_follow_the_per_partition_rate_at_half_of_it(plan):
    # 20,000 events/s per partition, run at 50%: 10,000 each.
    assert [s["events_per_s"] for s in plan["steps"]] == [10_000, 100_000, 1_000_000]
    assert [s["partitions"] for s in plan["steps"]] == [1, 10, 100]
    assert [s["loader_slots"] for s in plan["steps"]] == [1, 10, 100]


def test_cores_wal_and_storage_scale_with_the_rate(plan):
    steps = plan["steps"]
    assert [s["loader_cores"] for s in steps] == [0.1, 1.0, 10.0]
    assert [s["postgres_copy_cores"] for s in steps] == [0.2, 2.0, 20.0]
    assert [s["broker_cores"] for s in steps] == [0.1, 0.5, 5.0]
    assert [s["wal_mb_per_s"] for s in steps] == [20.0, 200.0, 2000.0]
    assert [s["staging_gb_per_hour"] for s in steps] == [10.8, 108.0, 1080.0]


def test_staging_is_partitioned_once_one_table_is_past_half_its_copy_ceiling(plan):
    # One table: the better of 1 and 2 streams, 60,000 rows/s; half of it is 30,000.
    assert [s["one_table_copy_enough"] for s in plan["steps"]] == [True, False, False]
    assert [s["staging_partitions"] for s in plan["steps"]] == [1, 4, 34]


def test_dbt_is_shown_to_keep_up_only_within_half_its_lower_bound(plan):
    assert [s["dbt_shown_to_keep_up"] for s in plan["steps"]] == [True, False, False]
    assert [s["dbt_cores_if_all_per_event"] for s in plan["steps"]] == [0.5, 5.0, 50.0]


def test_the_warehouse_comes_when_one_postgres_node_would_not_do(plan):
    # 2,000 MB/s of WAL at 100x is past the 1,000 MB/s assumed of one node; 20 cores are not past 64.
    assert [s["postgres_node_exceeded"] for s in plan["steps"]] == [False, False, True]
    one, ten, hundred = (s["changes"] for s in plan["steps"])
    assert one == ["nothing"]
    assert ten[0] == "10 partitions, 10 loader slots"
    assert ten[1] == "staging hash-partitioned on event_id into 4"
    assert ten[2].startswith("dbt: measure an incremental run of 2,000,000 new events")
    assert hundred[-1] == "staging and marts off one Postgres node: dbt on a warehouse adapter"


def test_the_next_limit_is_the_lowest_one_partitions_do_not_lift(plan):
    assert plan["next_limit"]["limit"] == "COPY into one table"
    assert (plan["next_limit"]["events_per_s"], plan["next_limit"]["x_peak"]) == (60_000, 6.0)
    figures = copy.deepcopy(FIGURES)
    for c in figures["loader_capacity"]["cells"]:  # a broker at 50 µs per event: 20,000 events/s per core
        c["cpu_s"]["broker"], c["produce"]["broker_cpu_s"] = 2.5, 2.5
    broker_first = capacity.plan(figures, cpus=2)["next_limit"]
    assert (broker_first["limit"], broker_first["events_per_s"]) == ("broker (tansu), per core", 20_000)


def test_the_matrix_scaling_and_what_two_cores_allow(plan):
    # One partition task: 20,000 events/s x 35 µs = 0.7 cores; 2 cores allow a second worker its full 2x.
    assert plan["scaling"]["cores_per_partition_task"] == 0.7
    assert plan["scaling"]["w2_vs_w1_if_cpu_bound"] == 2.0
    assert plan["scaling"]["by_partitions"] == [{"partitions": 2, "w1_vs_one_partition": 0.94, "w2_vs_w1": 1.76}]


def test_steps_within_what_was_measured_say_so(plan):
    assert [s["basis"] for s in plan["steps"]] == ["measured", "extrapolated", "extrapolated"]


def test_no_plan_without_the_loader_figures_or_a_peak():
    assert capacity.plan({k: v for k, v in FIGURES.items() if k != "loader_capacity"}) is None
    assert capacity.plan({k: v for k, v in FIGURES.items() if not k.startswith("ingest")}) is None


def test_the_report_sections_render_the_figures(plan):
    text = "\n".join(capacity.matrix_markdown(FIGURES["loader_capacity"]) + capacity.markdown(plan))
    assert "| 2 | 2 | 30,000 |" in text
    assert "**COPY into one table**, 60,000 events/s = 6.0× today's peak" in text
    assert "| 100x | 1,000,000 | 100 |" in text
