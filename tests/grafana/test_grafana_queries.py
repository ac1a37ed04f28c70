"""Every panel, variable and alert query of the provisioned Grafana files, run as the read-only role
against marts built by dbt from known purchases, with Grafana's substitutions applied."""

from __future__ import annotations

from collections import Counter, defaultdict
from contextlib import contextmanager
from datetime import UTC, timedelta
from decimal import Decimal

import psycopg
import pytest
from grafana_eval import (
    ALL,
    Variable,
    firing,
    math_compare,
    numeric_instances,
    render_query,
    threshold_gt,
)
from psycopg import errors, sql

pytestmark = pytest.mark.slow


def panel_sql(dashboard: dict, title: str) -> str:
    matches = [p for p in dashboard["panels"] if p["title"].startswith(title)]
    assert len(matches) == 1, f"one panel titled {title!r}, found {[p['title'] for p in dashboard['panels']]}"
    (target,) = matches[0]["targets"]
    return target["rawSql"]


def rule_query(rule: dict, ref: str) -> str:
    (query,) = [d for d in rule["data"] if d["refId"] == ref]
    return query["model"]["rawSql"]


def run_as_reader(warehouse, text: str) -> tuple[list[str], list[tuple]]:
    """One query over the reader role's own login, like Grafana's connection."""
    with psycopg.connect(warehouse.reader_dsn, autocommit=True) as conn:
        cur = conn.execute(text)
        return [c.name for c in cur.description], cur.fetchall()


@contextmanager
def scenario(warehouse):
    """A transaction of the warehouse owner that is rolled back: shape the data, then query as the reader."""
    with psycopg.connect(warehouse.dsn) as conn:
        try:
            yield conn
        finally:
            conn.rollback()


def query_in_scenario(warehouse, conn, text: str) -> tuple[list[str], list[tuple]]:
    conn.execute(sql.SQL("set local role {}").format(sql.Identifier(warehouse.reader_role)))
    cur = conn.execute(text)
    result = [c.name for c in cur.description], cur.fetchall()
    conn.execute("reset role")
    return result


def advance_clock(conn, by: timedelta) -> None:
    """What the warehouse looks like `by` later with nothing new: every recorded time moves back."""
    for table, columns in (
        ("staging.purchase_events", ("loaded_at", "purchased_at")),
        ("staging.purchase_events_rejected", ("rejected_at",)),
        ("marts.customer_purchases", ("loaded_at", "purchased_at")),
    ):
        assignments = sql.SQL(", ").join(sql.SQL("{0} = {0} - %(by)s").format(sql.Identifier(c)) for c in columns)
        conn.execute(sql.SQL("update {} set {}").format(sql.SQL(table), assignments), {"by": by})


def set_newest_load_age(conn, age: timedelta) -> None:
    """Moves the clock so that the newest event was loaded `age` ago (the fixture's data ages as tests run)."""
    current = conn.execute("select now() - max(loaded_at) from staging.purchase_events").fetchone()[0]
    advance_clock(conn, age - current)


def load_event(conn, warehouse, loaded_ago: timedelta) -> None:
    """An event the loader wrote to staging after dbt's last run."""
    conn.execute(
        """insert into staging.purchase_events (event_id, customer_id, product_name, quantity, unit_price, currency,
               purchased_at, schema_version, kafka_topic, kafka_partition, kafka_offset, loaded_at)
           values (gen_random_uuid(), %s, 'late', 1, 1.00, 'USD', now() - %s, 1, 'purchases', 0,
                   (select coalesce(max(kafka_offset), 0) + 1 from staging.purchase_events), now() - %s)""",
        (warehouse.customers["grace"], loaded_ago, loaded_ago),
    )


def variables_of(dashboard: dict, warehouse) -> dict[str, Variable]:
    variables = {}
    for definition in dashboard["templating"]["list"]:
        options = None
        if definition["type"] == "query":
            columns, rows = run_as_reader(warehouse, definition["query"])
            options = [row[columns.index("__value")] if "__value" in columns else row[0] for row in rows]
        variables[definition["name"]] = Variable.from_dashboard(definition, options)
    return variables


def utc_day(moment):
    return moment.astimezone(UTC).date()


ALL_SELECTED = {"customer": ALL, "currency": ALL, "top_n": "10"}


# --- the reader role ----------------------------------------------------------------------------------


def test_reader_reads_marts_built_after_it_was_created(warehouse):
    for table in (
        "customer_purchases",
        "dim_customers",
        "customer_spend_daily",
        "customer_spend",
        "spend_alerts",
        "pipeline_freshness",
        "staged_event_loads",
        "rejected_events_recent",
        "partition_lag",
    ):
        columns, _ = run_as_reader(warehouse, f"select * from marts.{table} limit 1")
        assert columns, table


@pytest.mark.parametrize(
    "table",
    [
        "app.customers",
        "staging.purchase_events",
        "staging.purchase_events_rejected",
        "staging.kafka_offsets",
        "staging.kafka_log_ends",
    ],
)
def test_reader_cannot_read_outside_marts(warehouse, table):
    with pytest.raises(errors.InsufficientPrivilege):
        run_as_reader(warehouse, f"select * from {table} limit 1")


def test_reader_cannot_write(warehouse):
    with pytest.raises((errors.ReadOnlySqlTransaction, errors.InsufficientPrivilege)):
        run_as_reader(warehouse, "delete from marts.customer_spend")
    with psycopg.connect(warehouse.reader_dsn, autocommit=True) as conn:
        conn.execute("set default_transaction_read_only = off")  # even past the role's read-only default
        with pytest.raises(errors.InsufficientPrivilege):
            conn.execute("delete from marts.customer_spend")
        with pytest.raises(errors.InsufficientPrivilege):
            conn.execute("create table marts.sneaky (x int)")


def test_rejected_events_view_hides_raw_records(warehouse):
    columns, _ = run_as_reader(warehouse, "select * from marts.rejected_events_recent")
    assert "raw_value" not in columns and "raw_key" not in columns and "customer_id" not in columns


# --- dashboard variables ------------------------------------------------------------------------------


def test_customer_and_currency_variables_list_the_warehouse(dashboard, warehouse):
    definitions = {d["name"]: d for d in dashboard["templating"]["list"]}
    columns, rows = run_as_reader(warehouse, definitions["customer"]["query"])
    assert columns == ["__text", "__value"]
    assert rows == [(name, warehouse.customer_id(name)) for name in sorted(warehouse.customers)]
    _, rows = run_as_reader(warehouse, definitions["currency"]["query"])
    assert [r[0] for r in rows] == ["EUR", "GBP", "USD"]


# --- panels -------------------------------------------------------------------------------------------


def expected_daily_spend(warehouse, customers: set[str] | None, currencies: set[str] | None, start, end):
    spend = defaultdict(Decimal)
    for p in warehouse.purchases:
        day = p.purchased_at.date()
        if (
            (customers is None or p.username in customers)
            and (currencies is None or p.currency in currencies)
            and start.date() <= day <= end.date()
        ):
            spend[(day, p.currency)] += p.amount
    return spend


@pytest.mark.parametrize(
    "customers, currencies",
    [
        (None, None),  # All, All
        ({"alice", "frank"}, None),  # two customers
        (None, {"EUR"}),  # one currency
        ({"carol"}, {"EUR", "USD"}),  # one customer, two currencies
    ],
)
def test_spend_per_day_by_currency(dashboard, warehouse, customers, currencies):
    variables = variables_of(dashboard, warehouse)
    selection = dict(ALL_SELECTED)
    if customers:
        selection["customer"] = [warehouse.customer_id(c) for c in sorted(customers)]
    if currencies:
        selection["currency"] = sorted(currencies)
    start, end = warehouse.now - timedelta(days=7), warehouse.now
    text = render_query(panel_sql(dashboard, "Spend per day by currency"), start, end, variables, selection)
    columns, rows = run_as_reader(warehouse, text)
    assert columns == ["time", "metric", "spend"]
    assert rows == sorted(rows, key=lambda r: (r[0], r[1])), "time series must come ordered by time"
    got = {(utc_day(r[0]), r[1]): r[2] for r in rows}
    assert got == dict(expected_daily_spend(warehouse, customers, currencies, start, end))


def test_spend_per_day_honours_the_time_range(dashboard, warehouse):
    variables = variables_of(dashboard, warehouse)
    start = warehouse.today_start - timedelta(days=1)
    text = render_query(
        panel_sql(dashboard, "Spend per day by currency"), start, warehouse.now, variables, ALL_SELECTED
    )
    _, rows = run_as_reader(warehouse, text)
    assert {utc_day(r[0]) for r in rows} == {start.date(), warehouse.today_start.date()}


@pytest.mark.parametrize(
    "top_n, days, expected",
    [
        (
            "3",
            7,
            [
                ("frank (EUR)", Decimal("1500.00")),
                ("alice (USD)", Decimal("1200.00")),
                ("erin (GBP)", Decimal("1000.00")),
            ],
        ),
        ("10", 0, [("frank (EUR)", Decimal("700.00")), ("bob (USD)", Decimal("600.00"))]),
    ],
)
def test_top_customers_by_spend(dashboard, warehouse, top_n, days, expected):
    variables = variables_of(dashboard, warehouse)
    start = warehouse.today_start - timedelta(days=days)
    text = render_query(
        panel_sql(dashboard, "Top customers by spend"), start, warehouse.now, variables, dict(ALL_SELECTED, top_n=top_n)
    )
    columns, rows = run_as_reader(warehouse, text)
    assert columns == ["customer", "spend"]
    assert rows == expected


def test_top_customers_of_one_currency(dashboard, warehouse):
    variables = variables_of(dashboard, warehouse)
    text = render_query(
        panel_sql(dashboard, "Top customers by spend"),
        warehouse.now - timedelta(days=7),
        warehouse.now,
        variables,
        dict(ALL_SELECTED, currency=["EUR"], top_n="5"),
    )
    _, rows = run_as_reader(warehouse, text)
    assert rows == [
        ("frank (EUR)", Decimal("1500.00")),
        ("carol (EUR)", Decimal("900.00")),
        ("alice (EUR)", Decimal("50.00")),
    ]


@pytest.mark.parametrize("customers", [None, {"bob"}, {"alice", "dave"}])
def test_purchases_per_minute(dashboard, warehouse, customers):
    variables = variables_of(dashboard, warehouse)
    selection = dict(ALL_SELECTED)
    if customers:
        selection["customer"] = [warehouse.customer_id(c) for c in sorted(customers)]
    start, end = warehouse.now - timedelta(days=2), warehouse.now
    text = render_query(panel_sql(dashboard, "Purchases per minute"), start, end, variables, selection)
    columns, rows = run_as_reader(warehouse, text)
    assert columns == ["time", "purchases"]
    expected = Counter(
        int(p.purchased_at.timestamp()) // 60 * 60
        for p in warehouse.purchases
        if start <= p.purchased_at <= end and (customers is None or p.username in customers)
    )
    assert [r[0] for r in rows] == sorted(r[0] for r in rows)
    assert {int(r[0]): r[1] for r in rows} == dict(expected)


def test_pipeline_freshness_counts_seconds_since_the_newest_load(dashboard, warehouse):
    text = panel_sql(dashboard, "Pipeline freshness")
    assert run_as_reader(warehouse, text)[0] == ["Seconds since newest loaded event"]
    with scenario(warehouse) as conn:
        set_newest_load_age(conn, timedelta(minutes=5))
        assert query_in_scenario(warehouse, conn, text)[1] == [(Decimal("300.000"),)]
    with scenario(warehouse) as conn:
        conn.execute("delete from staging.purchase_events")
        assert query_in_scenario(warehouse, conn, text)[1] == [(None,)]  # nothing loaded yet: no value


def test_events_loaded_in_the_last_ten_minutes(dashboard, warehouse):
    text = panel_sql(dashboard, "Events loaded, last 10 min")
    with scenario(warehouse) as conn:
        # The fixture's events were loaded 5 s apart; the oldest of them 70 s before the newest.
        set_newest_load_age(conn, timedelta(minutes=1))
        assert query_in_scenario(warehouse, conn, text)[1] == [(len(warehouse.purchases),)]
        set_newest_load_age(conn, timedelta(seconds=600 - 30))
        assert query_in_scenario(warehouse, conn, text)[1] == [(6,)]  # those loaded 0, 5, ... 25 s after the cut


def test_rejected_events_in_the_last_hour(dashboard, warehouse):
    _, rows = run_as_reader(warehouse, panel_sql(dashboard, "Rejected events, last hour"))
    assert rows == [(2,)]


def test_rejected_events_by_reason_in_the_time_range(dashboard, warehouse):
    text = render_query(
        panel_sql(dashboard, "Rejected events by reason"), warehouse.now - timedelta(hours=3), warehouse.now
    )
    columns, rows = run_as_reader(warehouse, text)
    assert columns == ["reason", "events", "last_rejected_at"]
    assert [(r[0], r[1]) for r in rows] == [("not JSON", 2), ("unit_price: must be greater than 0", 1)]
    assert rows[0][2] == warehouse.now - timedelta(minutes=20)


def test_transform_backlog_panel(dashboard, warehouse):
    text = panel_sql(dashboard, "Loaded, not yet in marts")
    assert run_as_reader(warehouse, text)[1] == [(0,)]
    with scenario(warehouse) as conn:
        load_event(conn, warehouse, timedelta(seconds=30))
        load_event(conn, warehouse, timedelta(seconds=10))
        assert query_in_scenario(warehouse, conn, text)[1] == [(2,)]


def test_spend_alerts_panel(dashboard, warehouse):
    variables = variables_of(dashboard, warehouse)
    text = render_query(
        panel_sql(dashboard, "Spend alerts"), warehouse.today_start, warehouse.now, variables, ALL_SELECTED
    )
    columns, rows = run_as_reader(warehouse, text)
    by_key = {
        (r[columns.index("username")], r[columns.index("currency")], r[columns.index("alert_type")]): (
            r[columns.index("spend")],
            r[columns.index("threshold")],
        )
        for r in rows
    }
    # Lifetime crossings always; daily ones only on days in range (dave's and frank's yesterday are not).
    assert by_key == {
        ("alice", "USD", "lifetime"): (Decimal("1200.00"), Decimal("1000.00")),
        ("erin", "GBP", "lifetime"): (Decimal("1000.00"), Decimal("1000.00")),
        ("frank", "EUR", "lifetime"): (Decimal("1500.00"), Decimal("1000.00")),
        ("bob", "USD", "daily"): (Decimal("600.00"), Decimal("500.00")),
        ("frank", "EUR", "daily"): (Decimal("700.00"), Decimal("500.00")),
    }


def test_every_panel_query_runs_as_the_reader(dashboard, warehouse):
    """Also those no test above names: each must render fully and run with read-only access."""
    variables = variables_of(dashboard, warehouse)
    selections = [
        ALL_SELECTED,
        dict(ALL_SELECTED, customer=[warehouse.customer_id("alice")], currency=["USD"]),
        dict(ALL_SELECTED, customer=[warehouse.customer_id("grace")]),
    ]
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            for selection in selections:
                text = render_query(
                    target["rawSql"], warehouse.now - timedelta(days=30), warehouse.now, variables, selection
                )
                run_as_reader(warehouse, text)


# --- alert rule: Customer spend over threshold --------------------------------------------------------


def spend_rule_instances(warehouse, rule, run=None):
    run = run or (lambda text: run_as_reader(warehouse, text))
    spend = numeric_instances(*run(rule_query(rule, "A")))
    threshold = numeric_instances(*run(rule_query(rule, "T")))
    condition = rule["data"][[d["refId"] for d in rule["data"]].index(rule["condition"])]["model"]
    assert condition["type"] == "math" and condition["expression"] == "$A >= $T"
    return spend, threshold, math_compare(spend, threshold, ">=")


def test_spend_rule_fires_exactly_for_customers_over_a_current_threshold(warehouse, alert_rules):
    rule = alert_rules["purchases-spend-over-threshold"]
    spend, threshold, condition = spend_rule_instances(warehouse, rule)

    def labels(user, currency):
        return frozenset({"customer_id": warehouse.customer_id(user), "username": user, "currency": currency}.items())

    expected = {
        labels("alice", "USD"): (1200, 1000),  # lifetime
        labels("bob", "USD"): (600, 500),  # today's daily
        labels("erin", "GBP"): (1000, 1000),  # lifetime, exactly at the threshold
        labels("frank", "EUR"): (1500, 1000),
    }  # lifetime x1.5 beats today's daily x1.4
    assert firing(condition) == set(expected)
    assert {k: (spend[k], threshold[k]) for k in expected} == expected
    # carol (900 EUR), dave (a crossing yesterday, not today) and grace (no purchases) do not fire.


def test_spend_rule_is_quiet_without_crossings(warehouse, alert_rules):
    rule = alert_rules["purchases-spend-over-threshold"]
    assert rule["noDataState"] == "OK"
    with scenario(warehouse) as conn:
        conn.execute("delete from marts.customer_spend")
        conn.execute("delete from marts.customer_spend_daily")
        _, _, condition = spend_rule_instances(warehouse, rule, lambda text: query_in_scenario(warehouse, conn, text))
        assert condition == {}


# --- alert rule: Pipeline stale -----------------------------------------------------------------------


def stale_stages(warehouse, rule, conn=None) -> dict[str, float]:
    text = rule_query(rule, "A")
    columns, rows = query_in_scenario(warehouse, conn, text) if conn else run_as_reader(warehouse, text)
    condition = rule["data"][[d["refId"] for d in rule["data"]].index(rule["condition"])]["model"]
    assert condition["type"] == "threshold" and condition["expression"] == "A"
    evaluator = condition["conditions"][0]["evaluator"]
    assert evaluator["type"] == "gt"
    result = threshold_gt(numeric_instances(columns, rows), evaluator["params"][0])
    return {dict(labels)["stage"]: value for labels, value in result.items()}


def test_stale_rule_is_quiet_while_the_pipeline_keeps_up(warehouse, alert_rules):
    rule = alert_rules["purchases-pipeline-stale"]
    assert rule["noDataState"] == "Alerting"  # the query always answers; no answer means trouble
    with scenario(warehouse) as conn:
        set_newest_load_age(conn, timedelta(minutes=1))
        assert stale_stages(warehouse, rule, conn) == {"loader": 0, "staging": 0, "transform": 0}


def test_stale_rule_fires_when_loading_stops_after_a_busy_hour(warehouse, alert_rules):
    rule = alert_rules["purchases-pipeline-stale"]
    with scenario(warehouse) as conn:
        set_newest_load_age(conn, timedelta(minutes=9, seconds=50))  # not yet
        assert stale_stages(warehouse, rule, conn) == {"loader": 0, "staging": 0, "transform": 0}
        set_newest_load_age(conn, timedelta(minutes=10, seconds=10))
        assert stale_stages(warehouse, rule, conn) == {"loader": 1, "staging": 0, "transform": 0}
        set_newest_load_age(conn, timedelta(hours=5))  # and it keeps firing, however long the loader is down
        assert stale_stages(warehouse, rule, conn)["loader"] == 1


def test_stale_rule_does_not_fire_for_a_quiet_shop(warehouse, alert_rules):
    rule = alert_rules["purchases-pipeline-stale"]
    with scenario(warehouse) as conn:
        # Only 5 purchases in the hour before the newest load: a lull, not a stall.
        conn.execute("""delete from staging.purchase_events where event_id not in (
                            select event_id from staging.purchase_events order by loaded_at desc limit 5)""")
        set_newest_load_age(conn, timedelta(hours=3))
        assert stale_stages(warehouse, rule, conn) == {"loader": 0, "staging": 0, "transform": 0}
        set_newest_load_age(conn, timedelta(hours=23, minutes=59))
        assert stale_stages(warehouse, rule, conn)["staging"] == 0
        set_newest_load_age(conn, timedelta(hours=24, minutes=1))  # a whole day without any event is stale
        assert stale_stages(warehouse, rule, conn)["staging"] == 1


def test_stale_rule_fires_when_loaded_events_wait_for_dbt(warehouse, alert_rules):
    rule = alert_rules["purchases-pipeline-stale"]
    with scenario(warehouse) as conn:
        set_newest_load_age(conn, timedelta(minutes=30))  # dbt's last run saw everything up to then
        load_event(conn, warehouse, timedelta(minutes=16))  # loaded since, not transformed
        load_event(conn, warehouse, timedelta(minutes=1))  # and the loader still loads
        assert stale_stages(warehouse, rule, conn) == {"loader": 0, "staging": 0, "transform": 1}
    with scenario(warehouse) as conn:
        set_newest_load_age(conn, timedelta(minutes=30))
        load_event(conn, warehouse, timedelta(minutes=5))  # waiting, but not for long
        assert stale_stages(warehouse, rule, conn) == {"loader": 0, "staging": 0, "transform": 0}


def test_stale_rule_is_quiet_on_an_empty_warehouse(warehouse, alert_rules):
    with scenario(warehouse) as conn:
        conn.execute("delete from staging.purchase_events")
        conn.execute("delete from marts.customer_purchases")
        assert stale_stages(warehouse, alert_rules["purchases-pipeline-stale"], conn) == {
            "loader": 0,
            "staging": 0,
            "transform": 0,
        }
