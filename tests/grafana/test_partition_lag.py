"""Lag you can see: the view marts.partition_lag, the "Partition lag" panel and the "Partition stuck" rule,
on hand-made states of staging.kafka_offsets (what the loader committed, and when) and
staging.kafka_log_ends (the log end it last saw), queried as the read-only role like Grafana."""

from __future__ import annotations

from contextlib import contextmanager
from datetime import timedelta
from decimal import Decimal

import psycopg
import pytest
from grafana_eval import firing, numeric_instances, render_query, threshold_gt
from psycopg import sql

pytestmark = pytest.mark.slow

RULE_UID = "purchases-partition-stuck"
TOPIC = "purchases"
VIEW_COLUMNS = [
    "kafka_topic",
    "kafka_partition",
    "next_offset",
    "log_end_offset",
    "lag",
    "last_commit_at",
    "seconds_since_commit",
    "log_end_seen_at",
]


@contextmanager
def partitions(warehouse, offsets=(), log_ends=()):
    """The two tables hold exactly these rows, in a transaction of the owner that is rolled back.

    offsets:  (topic, partition, next_offset, committed_ago)
    log_ends: (topic, partition, log_end_offset, seen_ago)
    Times are relative to the transaction's now(), the one the queries see.
    """
    with psycopg.connect(warehouse.dsn) as conn:
        try:
            conn.execute("delete from staging.kafka_offsets")
            conn.execute("delete from staging.kafka_log_ends")
            for topic, partition, next_offset, ago in offsets:
                conn.execute(
                    "insert into staging.kafka_offsets (kafka_topic, kafka_partition, next_offset, "
                    "updated_at, topic_id) values (%s, %s, %s, now() - %s, 'topic-id')",
                    (topic, partition, next_offset, ago),
                )
            for topic, partition, log_end, ago in log_ends:
                conn.execute(
                    "insert into staging.kafka_log_ends (kafka_topic, kafka_partition, log_end_offset, "
                    "seen_at) values (%s, %s, %s, now() - %s)",
                    (topic, partition, log_end, ago),
                )
            yield conn
        finally:
            conn.rollback()


def as_reader(warehouse, conn, text: str) -> tuple[list[str], list[tuple]]:
    conn.execute(sql.SQL("set local role {}").format(sql.Identifier(warehouse.reader_role)))
    try:
        cur = conn.execute(text)
        return [c.name for c in cur.description], cur.fetchall()
    finally:
        conn.execute("reset role")


def view(warehouse, conn) -> dict[tuple[str, int], dict]:
    columns, rows = as_reader(warehouse, conn, "select * from marts.partition_lag")
    assert columns == VIEW_COLUMNS
    result = {(r[0], r[1]): dict(zip(columns, r, strict=True)) for r in rows}
    assert len(result) == len(rows), "one row per topic and partition"
    return result


def stuck_rule(alert_rules) -> dict:
    return alert_rules[RULE_UID]


def rule_values(warehouse, conn, rule) -> dict[tuple[str, str], float]:
    """The rule's query A and threshold condition, as Grafana evaluates them: value per instance."""
    (query,) = [d for d in rule["data"] if d["refId"] == "A"]
    columns, rows = as_reader(warehouse, conn, query["model"]["rawSql"])
    (condition,) = [d["model"] for d in rule["data"] if d["refId"] == rule["condition"]]
    assert condition["type"] == "threshold" and condition["expression"] == "A"
    evaluator = condition["conditions"][0]["evaluator"]
    assert evaluator["type"] == "gt"
    instances = numeric_instances(columns, rows)
    for labels in instances:
        assert {name for name, _ in labels} == {"topic", "partition"}
    result = threshold_gt(instances, evaluator["params"][0])
    assert set(result) == set(instances)
    return {(dict(labels)["topic"], dict(labels)["partition"]): value for labels, value in result.items()}


def fired(warehouse, conn, rule) -> set[tuple[str, str]]:
    values = rule_values(warehouse, conn, rule)
    return set(firing(values))


def stuck_value(warehouse, conn, rule) -> dict[tuple[str, str], float]:
    """Query A's value per instance (the lag of a stuck partition, 0 otherwise): what the summary shows."""
    (query,) = [d for d in rule["data"] if d["refId"] == "A"]
    instances = numeric_instances(*as_reader(warehouse, conn, query["model"]["rawSql"]))
    return {(dict(labels)["topic"], dict(labels)["partition"]): value for labels, value in instances.items()}


def lag_panel(dashboard) -> dict:
    (panel,) = [p for p in dashboard["panels"] if p["title"] == "Partition lag"]
    return panel


def panel_rows(warehouse, conn, dashboard) -> list[dict]:
    (target,) = lag_panel(dashboard)["targets"]
    text = render_query(target["rawSql"], warehouse.now - timedelta(hours=6), warehouse.now)
    columns, rows = as_reader(warehouse, conn, text)
    return [dict(zip(columns, r, strict=True)) for r in rows]


# Hand-made partitions, one of each kind the rule must tell apart.
STUCK = (TOPIC, 0, 100, timedelta(minutes=10)), (TOPIC, 0, 150, timedelta(seconds=1))
QUIET = (TOPIC, 1, 4000, timedelta(days=2)), (TOPIC, 1, 4000, timedelta(seconds=1))
BUSY = (TOPIC, 2, 9000, timedelta(seconds=1)), (TOPIC, 2, 9500, timedelta(seconds=1))


# --- the view -----------------------------------------------------------------------------------------


def test_view_rows_for_hand_made_states(warehouse):
    offsets = [
        (TOPIC, 0, 100, timedelta(minutes=10)),  # behind its log end by 50
        (TOPIC, 1, 200, timedelta(seconds=3)),  # at its log end
        (TOPIC, 2, 300, timedelta(seconds=1)),  # committed past the log end it last saw: no lag
        (TOPIC, 4, 70, timedelta(hours=1)),  # no log end recorded (an older loader): lag unknown
        ("other", 0, 5, timedelta(minutes=1)),  # the same partition number of another topic
    ]
    log_ends = [
        (TOPIC, 0, 150, timedelta(seconds=2)),
        (TOPIC, 1, 200, timedelta(seconds=3)),
        (TOPIC, 2, 250, timedelta(seconds=2)),
        (TOPIC, 3, 40, timedelta(seconds=5)),  # never committed: next offset 0
        ("other", 0, 8, timedelta(minutes=1)),
    ]
    with partitions(warehouse, offsets, log_ends) as conn:
        now = conn.execute("select now()").fetchone()[0]
        rows = view(warehouse, conn)

        def row(next_offset, log_end, lag, committed_ago, seen_ago):
            return {
                "next_offset": next_offset,
                "log_end_offset": log_end,
                "lag": lag,
                "last_commit_at": None if committed_ago is None else now - committed_ago,
                "seconds_since_commit": None
                if committed_ago is None
                else Decimal(committed_ago.total_seconds()).quantize(Decimal("0.001")),
                "log_end_seen_at": None if seen_ago is None else now - seen_ago,
            }

        expected = {
            (TOPIC, 0): row(100, 150, 50, timedelta(minutes=10), timedelta(seconds=2)),
            (TOPIC, 1): row(200, 200, 0, timedelta(seconds=3), timedelta(seconds=3)),
            (TOPIC, 2): row(300, 250, 0, timedelta(seconds=1), timedelta(seconds=2)),
            (TOPIC, 3): row(0, 40, 40, None, timedelta(seconds=5)),
            (TOPIC, 4): row(70, None, 0, timedelta(hours=1), None),
            ("other", 0): row(5, 8, 3, timedelta(minutes=1), timedelta(minutes=1)),
        }
        assert {
            key: {k: v for k, v in r.items() if k not in ("kafka_topic", "kafka_partition")} for key, r in rows.items()
        } == expected
        assert rows[(TOPIC, 0)]["seconds_since_commit"] == Decimal("600.000")


def test_view_is_empty_before_the_loader_ran(warehouse):
    with partitions(warehouse) as conn:
        assert view(warehouse, conn) == {}


def test_view_shows_no_customer_data(warehouse):
    with partitions(warehouse, [STUCK[0]], [STUCK[1]]) as conn:
        columns, _ = as_reader(warehouse, conn, "select * from marts.partition_lag")
        assert not {"customer_id", "username", "raw_key", "raw_value", "topic_id"} & set(columns)


# --- the rule -----------------------------------------------------------------------------------------


def test_rule_shape(alert_rules, dashboard):
    rule = stuck_rule(alert_rules)
    assert rule["title"] == "Partition stuck"
    assert rule["for"] == "1m", "the second between records arriving and their commit must not fire it"
    assert rule["noDataState"] == "OK", "no partitions yet is fine"
    assert rule["execErrState"] == "Error"
    assert rule["labels"] == {"alert_kind": "pipeline", "severity": "critical"}
    assert rule["panelId"] == lag_panel(dashboard)["id"]
    (query,) = [d for d in rule["data"] if d["refId"] == "A"]
    assert query["model"]["rawSql"].lstrip().startswith("with bounds as ("), "the tunable bound comes first"
    assert "$labels.partition" in rule["annotations"]["summary"]


def test_rule_fires_for_a_stuck_partition(warehouse, alert_rules):
    """Lag, and every batch since the last commit failed: 10 minutes without a commit."""
    rule = stuck_rule(alert_rules)
    with partitions(warehouse, [STUCK[0]], [STUCK[1]]) as conn:
        assert fired(warehouse, conn, rule) == {(TOPIC, "0")}
        assert stuck_value(warehouse, conn, rule) == {(TOPIC, "0"): 50}  # the summary's record count


def test_rule_does_not_fire_for_a_quiet_partition(warehouse, alert_rules):
    """No lag, however old the last commit: nobody bought anything routed to that partition."""
    with partitions(warehouse, [QUIET[0]], [QUIET[1]]) as conn:
        assert rule_values(warehouse, conn, stuck_rule(alert_rules)) == {(TOPIC, "1"): 0}


def test_rule_does_not_fire_for_a_busy_healthy_partition(warehouse, alert_rules):
    """Lag 500 but a commit a second ago: the loader keeps up with a busy partition."""
    with partitions(warehouse, [BUSY[0]], [BUSY[1]]) as conn:
        assert rule_values(warehouse, conn, stuck_rule(alert_rules)) == {(TOPIC, "2"): 0}


@pytest.mark.parametrize(
    "offsets, log_ends",
    [
        ([(TOPIC, 0, 0, timedelta(days=3))], [(TOPIC, 0, 0, timedelta(days=3))]),  # an empty partition
        ([], [(TOPIC, 0, 0, timedelta(minutes=30))]),  # empty, never committed
        ([(TOPIC, 0, 12, timedelta(days=3))], []),  # an older loader: lag unknown
    ],
    ids=["empty", "never-committed-empty", "no-log-end"],
)
def test_rule_does_not_fire_for_a_partition_that_never_had_lag(warehouse, alert_rules, offsets, log_ends):
    with partitions(warehouse, offsets, log_ends) as conn:
        assert rule_values(warehouse, conn, stuck_rule(alert_rules)) == {(TOPIC, "0"): 0}


def test_rule_has_no_data_before_any_partition_is_known(warehouse, alert_rules):
    with partitions(warehouse) as conn:
        assert rule_values(warehouse, conn, stuck_rule(alert_rules)) == {}


def test_rule_fires_for_a_partition_whose_first_batch_never_committed(warehouse, alert_rules):
    """Records on the broker, nothing ever committed: stuck from the start (`for` covers the first second)."""
    with partitions(warehouse, [], [(TOPIC, 0, 40, timedelta(seconds=1))]) as conn:
        assert fired(warehouse, conn, stuck_rule(alert_rules)) == {(TOPIC, "0")}


def test_rule_fires_after_its_bound(warehouse, alert_rules):
    rule = stuck_rule(alert_rules)
    lag = [(TOPIC, 0, 150, timedelta(seconds=1))]
    with partitions(warehouse, [(TOPIC, 0, 100, timedelta(minutes=2, seconds=50))], lag) as conn:
        assert fired(warehouse, conn, rule) == set()
    with partitions(warehouse, [(TOPIC, 0, 100, timedelta(minutes=3, seconds=10))], lag) as conn:
        assert fired(warehouse, conn, rule) == {(TOPIC, "0")}


def test_rule_fires_only_for_the_stuck_partition_while_the_others_load(warehouse, alert_rules):
    """The reported incident: one partition stuck, the others loading (Pipeline stale sees fresh loads)."""
    with partitions(warehouse, [STUCK[0], QUIET[0], BUSY[0]], [STUCK[1], QUIET[1], BUSY[1]]) as conn:
        assert rule_values(warehouse, conn, stuck_rule(alert_rules)) == {
            (TOPIC, "0"): 1,
            (TOPIC, "1"): 0,
            (TOPIC, "2"): 0,
        }


def test_a_stuck_partition_keeps_firing_while_its_log_end_is_not_refreshed(warehouse, alert_rules):
    """The loader stopped reading it too (its task gave up): the last log end seen still shows the lag."""
    with partitions(warehouse, [STUCK[0]], [(TOPIC, 0, 150, timedelta(hours=2))]) as conn:
        assert fired(warehouse, conn, stuck_rule(alert_rules)) == {(TOPIC, "0")}


# --- the panel ----------------------------------------------------------------------------------------


def test_panel_lists_each_partition_with_its_lag_and_commit_age(warehouse, dashboard):
    never = (TOPIC, 3, 40, timedelta(seconds=1))
    old_loader = (TOPIC, 4, 70, timedelta(hours=1))
    with partitions(warehouse, [STUCK[0], QUIET[0], BUSY[0], old_loader], [STUCK[1], QUIET[1], BUSY[1], never]) as conn:
        rows = panel_rows(warehouse, conn, dashboard)
    assert list(rows[0]) == [
        "topic",
        "partition",
        "state",
        "lag",
        "seconds_since_commit",
        "next_offset",
        "log_end_offset",
        "last_commit_at",
        "log_end_seen_at",
    ]
    assert [(r["topic"], r["partition"], r["state"], r["lag"], r["seconds_since_commit"]) for r in rows] == [
        (TOPIC, 0, "stuck", 50, Decimal("600.000")),
        (TOPIC, 1, "up to date", 0, Decimal("172800.000")),
        (TOPIC, 2, "loading", 500, Decimal("1.000")),
        (TOPIC, 3, "stuck", 40, None),
        (TOPIC, 4, "log end unknown", 0, Decimal("3600.000")),
    ]


def test_panel_colours_exactly_what_the_rule_fires_for(warehouse, dashboard, alert_rules):
    """The panel's 'stuck' (red) and the rule share one bound: check both sides of it."""
    overrides = {o["matcher"]["options"]: o["properties"] for o in lag_panel(dashboard)["fieldConfig"]["overrides"]}
    mappings = {p["id"]: p["value"] for p in overrides["state"]}["mappings"][0]["options"]
    assert mappings["stuck"]["color"] == "red"
    rule = stuck_rule(alert_rules)
    for ago in (timedelta(minutes=2, seconds=50), timedelta(minutes=3, seconds=10), timedelta(days=1)):
        offsets = [(TOPIC, 0, 100, ago), (TOPIC, 1, 100, ago), (TOPIC, 2, 100, timedelta(seconds=1))]
        log_ends = [
            (TOPIC, 0, 150, timedelta(seconds=1)),
            (TOPIC, 1, 100, timedelta(seconds=1)),
            (TOPIC, 2, 600, timedelta(seconds=1)),
        ]
        with partitions(warehouse, offsets, log_ends) as conn:
            red = {
                (r["topic"], str(r["partition"]))
                for r in panel_rows(warehouse, conn, dashboard)
                if r["state"] == "stuck"
            }
            assert red == fired(warehouse, conn, rule), ago


def test_panel_query_runs_as_the_reader_over_its_own_login(warehouse, dashboard):
    (target,) = lag_panel(dashboard)["targets"]
    text = render_query(target["rawSql"], warehouse.now - timedelta(hours=1), warehouse.now)
    with psycopg.connect(warehouse.reader_dsn, autocommit=True) as conn:
        conn.execute(text).fetchall()
