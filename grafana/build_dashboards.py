"""Builds grafana/provisioning/dashboards/customer-spend.json, the JSON Grafana provisions.

The SQL stays readable here; the JSON is generated. After changing this file run
    .venv/bin/python grafana/build_dashboards.py
and commit both (tests/grafana checks that they agree).

Every query reads schema `marts` only, as the read-only `grafana_reader` role. The customer and currency
variables are multi-value with an "All" option whose value is the literal '__all' (Grafana inserts a
custom all value unescaped), so "All" never expands into a list of every customer.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

DASHBOARD_PATH = Path(__file__).resolve().parent / "provisioning" / "dashboards" / "customer-spend.json"
DASHBOARD_UID = "purchases-customer-spend"
DATASOURCE = {"type": "grafana-postgresql-datasource", "uid": "warehouse"}
ALL = "'__all'"

CUSTOMER_FILTER = "('__all' in ($customer) or {col}::text in ($customer))"
CURRENCY_FILTER = "('__all' in ($currency) or {col}::text in ($currency))"


def filters(customer_col: str, currency_col: str) -> str:
    return CUSTOMER_FILTER.format(col=customer_col) + "\n  and " + CURRENCY_FILTER.format(col=currency_col)


def sql(text: str) -> str:
    return textwrap.dedent(text).strip()


def target(raw_sql: str, fmt: str = "table", ref: str = "A") -> dict:
    return {
        "refId": ref,
        "datasource": DATASOURCE,
        "editorMode": "code",
        "format": fmt,
        "rawQuery": True,
        "rawSql": raw_sql,
    }


def panel(
    pid: int,
    kind: str,
    title: str,
    grid: tuple[int, int, int, int],
    targets: list[dict],
    description: str,
    field_config: dict | None = None,
    options: dict | None = None,
) -> dict:
    x, y, w, h = grid
    return {
        "id": pid,
        "type": kind,
        "title": title,
        "description": description,
        "gridPos": {"x": x, "y": y, "w": w, "h": h},
        "datasource": DATASOURCE,
        "targets": targets,
        "fieldConfig": field_config or {"defaults": {}, "overrides": []},
        "options": options or {},
    }


def thresholds(*steps: tuple[float | None, str]) -> dict:
    return {"mode": "absolute", "steps": [{"value": v, "color": c} for v, c in steps]}


def by_name(field: str, *properties: dict) -> dict:
    """A field override: `properties` for the column named `field`."""
    return {"matcher": {"id": "byName", "options": field}, "properties": list(properties)}


def stat_options() -> dict:
    return {
        "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
        "colorMode": "background",
        "graphMode": "none",
        "textMode": "value_and_name",
        "justifyMode": "auto",
        "orientation": "auto",
    }


# --- queries (tests/grafana runs each of these against marts built by dbt) -------------------------

FRESHNESS_SQL = sql("""
    select seconds_since_newest_load as "Seconds since newest loaded event"
    from marts.pipeline_freshness
""")

LOADED_10M_SQL = sql("""
    select events_loaded_last_10m as "Events loaded, last 10 min"
    from marts.pipeline_freshness
""")

REJECTED_LAST_HOUR_SQL = sql("""
    select count(*) as "Rejected events, last hour"
    from marts.rejected_events_recent
    where rejected_at > now() - interval '1 hour'
""")

# Events the loader put in staging that the dbt run has not yet carried into marts.
TRANSFORM_BACKLOG_SQL = sql("""
    select count(*) as "Loaded, not yet in marts"
    from marts.staged_event_loads
    where loaded_at > coalesce((select max(loaded_at) from marts.customer_purchases), '-infinity')
""")

SPEND_PER_DAY_SQL = sql(f"""
    select spend_date::timestamp at time zone 'UTC' as "time", currency::text as metric, sum(spend) as spend
    from marts.customer_spend_daily
    where $__timeFilter(spend_date)
      and {filters("customer_id", "currency")}
    group by 1, 2
    order by 1, 2
""")

TOP_CUSTOMERS_SQL = sql(f"""
    select coalesce(c.username, d.customer_id::text) || ' (' || d.currency || ')' as customer,
           sum(d.spend) as spend
    from marts.customer_spend_daily d
    left join marts.dim_customers c on c.customer_id = d.customer_id
    where $__timeFilter(d.spend_date)
      and {filters("d.customer_id", "d.currency")}
    group by d.customer_id, c.username, d.currency
    order by spend desc, customer
    limit $top_n
""")

PURCHASES_PER_MINUTE_SQL = sql(f"""
    select $__timeGroupAlias(purchased_at, '1m'), count(*) as purchases
    from marts.customer_purchases
    where $__timeFilter(purchased_at)
      and {filters("customer_id", "currency")}
    group by 1
    order by 1
""")

REJECTED_BY_REASON_SQL = sql("""
    select reason, count(*) as events, max(rejected_at) as last_rejected_at
    from marts.rejected_events_recent
    where $__timeFilter(rejected_at)
    group by reason
    order by events desc, reason
""")

SPEND_ALERTS_SQL = sql(f"""
    select c.username, a.customer_id::text as customer_id, a.currency::text as currency, a.alert_type,
           a.spend_date, a.spend, a.threshold, a.first_crossed_at
    from marts.spend_alerts a
    left join marts.dim_customers c on c.customer_id = a.customer_id
    where (a.alert_type = 'lifetime' or a.spend_date between $__timeFrom()::date and $__timeTo()::date)
      and {filters("a.customer_id", "a.currency")}
    order by a.first_crossed_at desc, a.customer_id, a.alert_type
    limit 200
""")

# How long a partition with lag may go without a commit before it counts as stuck: the `commit_max_age`
# bound of the "Partition stuck" rule (grafana/provisioning/alerting/rules.yaml). Keep the two equal;
# tests/grafana/test_partition_lag.py checks that the panel and the rule agree.
PARTITION_STUCK_AFTER = "3 minutes"

# One row per topic partition: its lag (records on the broker not committed to staging) and the age of its
# last commit. `state` colours the row's verdict: red ("stuck") exactly when the rule would fire.
PARTITION_LAG_SQL = sql(f"""
    select kafka_topic as topic, kafka_partition as partition,
           case when lag > 0 and coalesce(last_commit_at, '-infinity') < now() - interval '{PARTITION_STUCK_AFTER}'
                     then 'stuck'
                when lag > 0 then 'loading'
                when log_end_offset is null then 'log end unknown'
                else 'up to date' end as state,
           lag, seconds_since_commit, next_offset, log_end_offset, last_commit_at, log_end_seen_at
    from marts.partition_lag
    order by kafka_topic, kafka_partition
""")

CUSTOMER_VARIABLE_SQL = sql("""
    select coalesce(username, customer_id::text) as __text, customer_id::text as __value
    from marts.dim_customers
    order by 1
""")

CURRENCY_VARIABLE_SQL = sql("""
    select distinct currency::text from marts.customer_spend order by 1
""")


def query_variable(name: str, label: str, query: str) -> dict:
    return {
        "name": name,
        "label": label,
        "type": "query",
        "datasource": DATASOURCE,
        "query": query,
        "definition": query,
        "refresh": 2,
        "sort": 0,
        "multi": True,
        "includeAll": True,
        "allValue": ALL,
        "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
        "options": [],
    }


def build() -> dict:
    seconds = {
        "defaults": {
            "unit": "s",
            "decimals": 0,
            "thresholds": thresholds((None, "green"), (300, "orange"), (600, "red")),
        },
        "overrides": [],
    }
    count_red = {
        "defaults": {"unit": "short", "decimals": 0, "thresholds": thresholds((None, "green"), (1, "red"))},
        "overrides": [],
    }
    count_plain = {
        "defaults": {"unit": "short", "decimals": 0, "thresholds": thresholds((None, "blue"))},
        "overrides": [],
    }
    money = {"defaults": {"unit": "none", "decimals": 2}, "overrides": []}
    partition_lag = {
        "defaults": {},
        "overrides": [
            by_name(
                "state",
                {"id": "custom.cellOptions", "value": {"type": "color-background"}},
                {
                    "id": "mappings",
                    "value": [
                        {
                            "type": "value",
                            "options": {
                                "stuck": {"text": "stuck", "color": "red", "index": 0},
                                "loading": {"text": "loading", "color": "blue", "index": 1},
                                "up to date": {"text": "up to date", "color": "green", "index": 2},
                                "log end unknown": {"text": "log end unknown", "color": "transparent", "index": 3},
                            },
                        }
                    ],
                },
            ),
            by_name("lag", {"id": "unit", "value": "short"}, {"id": "decimals", "value": 0}),
            by_name("seconds_since_commit", {"id": "unit", "value": "s"}, {"id": "decimals", "value": 0}),
        ],
    }
    panels = [
        panel(
            1,
            "stat",
            "Pipeline freshness",
            (0, 0, 6, 4),
            [target(FRESHNESS_SQL)],
            "Seconds since the newest event reached staging (loader). Red past 10 minutes: see the "
            "Pipeline stale alert.",
            seconds,
            stat_options(),
        ),
        panel(
            2,
            "stat",
            "Events loaded, last 10 min",
            (6, 0, 6, 4),
            [target(LOADED_10M_SQL)],
            "Events the loader wrote to staging in the last 10 minutes.",
            count_plain,
            stat_options(),
        ),
        panel(
            3,
            "stat",
            "Rejected events, last hour",
            (12, 0, 6, 4),
            [target(REJECTED_LAST_HOUR_SQL)],
            "Records on the topic the loader could not accept in the last hour (kept in "
            "staging.purchase_events_rejected with the reason).",
            count_red,
            stat_options(),
        ),
        panel(
            4,
            "stat",
            "Loaded, not yet in marts",
            (18, 0, 6, 4),
            [target(TRANSFORM_BACKLOG_SQL)],
            "Events in staging that the last dbt run has not carried into marts yet.",
            count_plain,
            stat_options(),
        ),
        panel(
            10,
            "table",
            "Partition lag",
            (0, 4, 24, 6),
            [target(PARTITION_LAG_SQL)],
            "Per topic partition (marts.partition_lag): lag = records on the broker the loader has not "
            "committed to staging yet, and the seconds since it last committed a batch there. State "
            f"'stuck' (red): lag and no commit for {PARTITION_STUCK_AFTER}, the bound of the 'Partition "
            "stuck' alert rule; 'loading': lag, and commits keep coming; 'up to date': no lag, however "
            "old the last commit (a quiet partition).",
            partition_lag,
            {"showHeader": True, "cellHeight": "sm"},
        ),
        panel(
            5,
            "timeseries",
            "Spend per day by currency",
            (0, 10, 12, 9),
            [target(SPEND_PER_DAY_SQL, fmt="time_series")],
            "Daily spend (marts.customer_spend_daily) of the selected customers, one series per currency.",
            {
                "defaults": {
                    "unit": "none",
                    "decimals": 2,
                    "custom": {"drawStyle": "bars", "fillOpacity": 60, "stacking": {"mode": "none"}},
                },
                "overrides": [],
            },
            {"legend": {"displayMode": "table", "placement": "bottom", "calcs": ["sum"]}, "tooltip": {"mode": "multi"}},
        ),
        panel(
            6,
            "barchart",
            "Top customers by spend ($top_n)",
            (12, 10, 12, 9),
            [target(TOP_CUSTOMERS_SQL)],
            "The customers who spent most in the selected time range, per currency "
            "(amounts in different currencies are not converted).",
            money,
            {
                "orientation": "horizontal",
                "xField": "customer",
                "showValue": "auto",
                "legend": {"showLegend": False},
                "barWidth": 0.8,
            },
        ),
        panel(
            7,
            "timeseries",
            "Purchases per minute",
            (0, 19, 12, 8),
            [target(PURCHASES_PER_MINUTE_SQL, fmt="time_series")],
            "Purchases per minute by purchase time, from marts.customer_purchases (so they appear once dbt has run).",
            {
                "defaults": {"unit": "short", "decimals": 0, "custom": {"drawStyle": "bars", "fillOpacity": 80}},
                "overrides": [],
            },
            {"legend": {"showLegend": False}, "tooltip": {"mode": "single"}},
        ),
        panel(
            8,
            "table",
            "Rejected events by reason",
            (12, 19, 12, 8),
            [target(REJECTED_BY_REASON_SQL)],
            "Why the loader rejected records in the selected time range. Replay them from staging "
            "once the cause is fixed.",
            {"defaults": {}, "overrides": []},
            {"showHeader": True, "sortBy": [{"displayName": "events", "desc": True}]},
        ),
        panel(
            9,
            "table",
            "Spend alerts",
            (0, 27, 24, 8),
            [target(SPEND_ALERTS_SQL)],
            "Customers whose spend crossed a threshold (marts.spend_alerts): lifetime crossings, and "
            "daily crossings on days in the selected time range. The same rows drive the "
            "'Customer spend over threshold' alert rule.",
            {"defaults": {}, "overrides": []},
            {"showHeader": True},
        ),
    ]
    return {
        "uid": DASHBOARD_UID,
        "title": "Customer spend",
        "description": "What customers spend, and whether the purchases pipeline keeps up.",
        "tags": ["purchases", "spend"],
        "timezone": "utc",
        "editable": True,
        "graphTooltip": 1,
        "refresh": "1m",
        "schemaVersion": 41,
        "version": 1,
        "time": {"from": "now-7d", "to": "now"},
        "timepicker": {},
        "annotations": {"list": []},
        "links": [],
        "templating": {
            "list": [
                query_variable("customer", "Customer", CUSTOMER_VARIABLE_SQL),
                query_variable("currency", "Currency", CURRENCY_VARIABLE_SQL),
                {
                    "name": "top_n",
                    "label": "Top N",
                    "type": "custom",
                    "query": "5,10,20,50",
                    "multi": False,
                    "includeAll": False,
                    "current": {"selected": True, "text": "10", "value": "10"},
                    "options": [{"selected": v == "10", "text": v, "value": v} for v in ("5", "10", "20", "50")],
                },
            ]
        },
        "panels": panels,
    }


def render() -> str:
    return json.dumps(build(), indent=2, ensure_ascii=False) + "\n"


def main() -> None:
    DASHBOARD_PATH.parent.mkdir(parents=True, exist_ok=True)
    DASHBOARD_PATH.write_text(render())
    print(f"wrote {DASHBOARD_PATH}")


if __name__ == "__main__":
    main()
