"""`dbt build` of the real project against known purchases: exact marts, incremental == full rebuild,
threshold changes, and reconciliation tests that do fail when the marts drift.

The tests of this module build on each other's state (in file order), like successive pipeline runs.
"""

from __future__ import annotations

import json
from datetime import timedelta
from decimal import Decimal

import pytest
from dbt_test_data import (
    ALICE,
    BOB,
    CAROL,
    EXPECTED_ALERTS,
    EXPECTED_DAILY,
    EXPECTED_SPEND,
    FIRST_BATCH,
    SECOND_BATCH,
    add_customers,
    at,
    load_purchases,
    purchase,
)

from purchases import transform
from purchases.transform.project import profiles_dir

pytestmark = pytest.mark.slow

# Columns that say when a row was written, not what it says: excluded when comparing builds.
WRITE_TIME_COLUMNS = {"transformed_at", "last_transformed_at"}
MARTS = ["customer_purchases", "customer_spend_daily", "customer_spend", "dim_customers", "spend_alerts"]


def dbt(*args: str, check: bool = True) -> dict:
    """Runs dbt on the test's project copy, in-process like the DAG's tasks (dbtRunner: no 7 s interpreter
    start per command); returns run_results.json with `returncode` and `error` added."""
    from dbt.cli.main import dbtRunner

    outcome = dbtRunner().invoke(
        [*args, "--project-dir", str(transform.project_dir()), "--profiles-dir", str(profiles_dir())]
    )
    results_file = transform.project_dir() / "target" / "run_results.json"
    results = json.loads(results_file.read_text()) if outcome.exception is None else {"results": []}
    results["returncode"], results["error"] = (0 if outcome.success else 1), str(outcome.exception or "")
    if check and not outcome.success:
        failed = {uid: status for uid, status in statuses(results).items() if status not in ("success", "pass")}
        raise AssertionError(f"dbt {' '.join(args)} failed: {results['error'] or failed}")
    return results


def statuses(results: dict) -> dict[str, str]:
    """Outcome per node; exposures are documentation and always 'no-op'."""
    return {r["unique_id"]: r["status"] for r in results["results"] if not r["unique_id"].startswith("exposure.")}


def mart_rows(db, table: str) -> set[tuple]:
    columns = [
        c
        for (c,) in db.execute(
            "select column_name from information_schema.columns where table_schema = 'marts' and table_name = %s "
            "order by ordinal_position",
            (table,),
        ).fetchall()
        if c not in WRITE_TIME_COLUMNS
    ]
    assert columns, f"marts.{table} does not exist"
    return set(db.execute(f"select {', '.join(columns)} from marts.{table}").fetchall())


def snapshot(db) -> dict[str, set[tuple]]:
    return {table: mart_rows(db, table) for table in MARTS}


def spend(db) -> dict:
    return {
        (c, cur): (total, count, first, last, threshold, crossed)
        for c, cur, total, count, first, last, threshold, crossed in db.execute(
            "select customer_id, currency, total_spend, purchase_count, first_purchase_at, last_purchase_at,"
            " lifetime_threshold, lifetime_threshold_crossed_at from marts.customer_spend"
        )
    }


def daily(db) -> dict:
    return {
        (c, cur, day.isoformat()): (amount, count, threshold, crossed)
        for c, cur, day, amount, count, threshold, crossed in db.execute(
            "select customer_id, currency, spend_date, spend, purchase_count, daily_threshold,"
            " daily_threshold_crossed_at from marts.customer_spend_daily"
        )
    }


def alerts(db) -> dict:
    return {
        (c, cur, kind, day.isoformat() if day else None): (amount, threshold, crossed)
        for c, cur, kind, day, amount, threshold, crossed in db.execute(
            "select customer_id, currency, alert_type, spend_date, spend, threshold, first_crossed_at"
            " from marts.spend_alerts"
        )
    }


def row_versions(db, table: str, customer_id) -> set[str]:
    """Physical row versions (xmin): they change exactly when a row is rewritten."""
    return {v for (v,) in db.execute(f"select xmin::text from marts.{table} where customer_id = %s", (customer_id,))}


def test_build_passes_and_the_marts_are_exact(dbt_env, db):
    add_customers(dbt_env["dsn"])
    load_purchases(dbt_env["dsn"], FIRST_BATCH)

    results = dbt("build")

    outcome = statuses(results)
    assert set(outcome.values()) <= {"success", "pass"}, {
        k: v for k, v in outcome.items() if v not in ("success", "pass")
    }
    ran = set(outcome)
    assert {f"model.purchases.{m}" for m in MARTS} <= ran
    assert sum(1 for uid in ran if uid.startswith("unit_test.")) == 6
    assert {
        "test.purchases.customer_spend_reconciles_with_customer_purchases",
        "test.purchases.customer_purchases_reconcile_with_staging",
    } <= ran
    assert spend(db) == EXPECTED_SPEND
    assert daily(db) == EXPECTED_DAILY
    assert alerts(db) == EXPECTED_ALERTS
    assert sorted(
        db.execute(
            "select username, purchase_count, first_purchase_at, last_purchase_at from marts.dim_customers"
        ).fetchall()
    ) == [
        ("alice", 5, at("2024-03-01T09:00:00+00:00"), at("2024-03-03T08:00:00+00:00")),
        ("bob", 4, at("2024-03-02T10:00:00+00:00"), at("2024-03-04T10:00:00+00:00")),
        ("carol", 0, None, None),
    ]
    total = db.execute("select total_price from marts.customer_purchases where quantity = 3").fetchone()[0]
    assert total == Decimal("99.99") and isinstance(total, Decimal)
    # Money is numeric in every mart; password hashes never leave app.customers.
    types = dict(
        db.execute(
            "select table_name || '.' || column_name, data_type from information_schema.columns "
            "where table_schema in ('marts', 'marts_staging')"
        ).fetchall()
    )
    assert {
        types[c]
        for c in (
            "customer_purchases.unit_price",
            "customer_purchases.total_price",
            "customer_spend.total_spend",
            "customer_spend_daily.spend",
            "spend_alerts.spend",
            "spend_alerts.threshold",
        )
    } == {"numeric"}
    assert not [c for c in types if c.endswith(".password_hash")]


def test_incremental_build_reads_only_new_data_and_equals_a_full_rebuild(dbt_env, db):
    bob_daily, bob_spend = row_versions(db, "customer_spend_daily", BOB), row_versions(db, "customer_spend", BOB)
    load_purchases(dbt_env["dsn"], SECOND_BATCH)

    dbt("build")

    # Alice's late purchase of Feb 28 moves her USD crossing back to purchase 2; carol crosses both at once.
    assert spend(db)[(ALICE, "USD")] == (
        Decimal("1549.99"),
        5,
        at("2024-02-28T10:00:00+00:00"),
        at("2024-03-03T08:00:00+00:00"),
        Decimal("1000.00"),
        at("2024-03-01T12:00:00+00:00"),
    )
    assert daily(db)[(ALICE, "USD", "2024-02-28")] == (
        Decimal("500.00"),
        1,
        Decimal("500.00"),
        at("2024-02-28T10:00:00+00:00"),
    )
    found = alerts(db)
    assert found[(CAROL, "JPY", "lifetime", None)] == (
        Decimal("1500.00"),
        Decimal("1000.00"),
        at("2024-03-05T07:00:00+00:00"),
    )
    assert found[(CAROL, "JPY", "daily", "2024-03-05")] == (
        Decimal("1500.00"),
        Decimal("500.00"),
        at("2024-03-05T07:00:00+00:00"),
    )
    assert len(found) == len(EXPECTED_ALERTS) + 3
    # Bob bought nothing new: none of his rows was rewritten.
    assert row_versions(db, "customer_spend_daily", BOB) == bob_daily
    assert row_versions(db, "customer_spend", BOB) == bob_spend

    incremental = snapshot(db)
    dbt("build", "--full-refresh")
    assert snapshot(db) == incremental


def test_an_incremental_run_with_nothing_new_rewrites_nothing(db):
    before = {t: row_versions(db, t, c) for t in ("customer_spend", "customer_spend_daily") for c in (ALICE, BOB)}
    dbt("run", "--select", "customer_purchases", "customer_spend", "customer_spend_daily")
    after = {t: row_versions(db, t, c) for t in ("customer_spend", "customer_spend_daily") for c in (ALICE, BOB)}
    assert after == before


def test_a_changed_threshold_reevaluates_alerts_without_full_refresh(db):
    vars_ = '{"spend_alert_threshold": 60, "daily_spend_alert_threshold": 100}'
    dbt("build", "--select", "marts", "--vars", vars_)
    changed = snapshot(db)
    found = alerts(db)
    assert found[(ALICE, "EUR", "lifetime", None)] == (
        Decimal("99.99"),
        Decimal("60.00"),
        at("2024-03-02T10:00:00+00:00"),
    )
    assert found[(ALICE, "USD", "lifetime", None)][1:] == (Decimal("60.00"), at("2024-02-28T10:00:00+00:00"))
    assert found[(BOB, "EUR", "lifetime", None)][1] == Decimal("50.00")  # the seed's override still wins
    assert (BOB, "USD", "lifetime", None) not in found  # 5.00 < 60
    assert (ALICE, "USD", "daily", "2024-03-02") not in found  # 99.99 < 100

    dbt("build", "--select", "marts", "--full-refresh", "--vars", vars_)
    assert snapshot(db) == changed

    dbt("build", "--select", "marts")  # back to the project's thresholds, still incrementally
    assert {k: v for k, v in alerts(db).items() if k[0] != CAROL and k[2:] != ("daily", "2024-02-28")} == {
        **EXPECTED_ALERTS,
        (ALICE, "USD", "lifetime", None): (Decimal("1549.99"), Decimal("1000.00"), at("2024-03-01T12:00:00+00:00")),
    }


def test_reconciliation_tests_fail_when_marts_drift(dbt_env, db):
    reconcile_spend = ("--select", "customer_spend_reconciles_with_customer_purchases")
    reconcile_staging = (
        "--select",
        "customer_purchases_reconcile_with_staging",
        "--vars",
        '{"reconciliation_grace_minutes": 0}',
    )
    assert dbt("test", *reconcile_spend)["returncode"] == 0
    assert dbt("test", *reconcile_staging)["returncode"] == 0

    db.execute(
        "update marts.customer_spend set total_spend = total_spend + 0.01 where customer_id = %s and currency = 'EUR'",
        (BOB,),
    )
    failed = dbt("test", *reconcile_spend, check=False)
    assert failed["returncode"] != 0 and set(statuses(failed).values()) == {"fail"}

    # An event whose gate run committed long after it started (passed_at 2 hours before the newest one,
    # beyond the incremental lookback) is missed by incremental runs: the reconciliation says so, and a
    # backfill of its purchase day picks it up.
    late = purchase(12, BOB, "USD", 1, "1.00", "2024-03-04T12:00:00+00:00")
    newest = db.execute("select max(passed_at) from marts.customer_purchases").fetchone()[0]
    load_purchases(dbt_env["dsn"], [late], passed_at=newest - timedelta(hours=2))
    dbt("run", "--select", "customer_purchases")
    failed = dbt("test", *reconcile_staging, check=False)
    assert failed["returncode"] != 0 and set(statuses(failed).values()) == {"fail"}

    dbt("build", "--select", "marts", "--vars", '{"start_date": "2024-03-04", "end_date": "2024-03-05"}')
    assert dbt("test", *reconcile_staging)["returncode"] == 0
    assert spend(db)[(BOB, "USD")][:2] == (Decimal("6.00"), 2)


def test_a_micro_batch_run_tests_the_increment_and_the_daily_run_every_table(dbt_env, db):
    """test_scope=increment (the DAG's asset-triggered runs) reads what the run added; `all` (the daily run)
    reads every table whole and reconciles them. A defect in the history fails only the latter; the same
    defect in a row of the increment fails both."""
    increment = ("--vars", '{"test_scope": "increment"}')
    damaged = purchase(1, ALICE, "USD", 2, "150.00", "2024-03-01T09:00:00+00:00").event_id
    (transformed_at,) = db.execute(
        "select transformed_at from marts.customer_purchases where event_id = %s", (damaged,)
    ).fetchone()
    db.execute("update marts.customer_purchases set total_price = -1 where event_id = %s", (damaged,))
    try:
        load_purchases(dbt_env["dsn"], [purchase(13, CAROL, "JPY", 1, "2.00", "2024-03-06T08:00:00+00:00")])
        micro = dbt("build", "--select", "staging", "marts", *increment)
        tests_run = [uid for uid in statuses(micro) if uid.startswith("test.")]
        assert len(tests_run) > 20 and set(statuses(micro).values()) <= {"success", "pass"}

        daily = dbt("build", "--select", "staging", "marts", check=False)
        failed = {uid.split(".")[2] for uid, status in statuses(daily).items() if status == "fail"}
        assert failed == {"positive_customer_purchases_total_price"}, failed

        # A reconciliation compares whole tables: the daily run only.
        db.execute("update marts.customer_spend set total_spend = total_spend + 0.01 where customer_id = %s", (CAROL,))
        reconcile = ("--select", "customer_spend_reconciles_with_customer_purchases")
        assert dbt("test", *reconcile, *increment)["returncode"] == 0
        assert set(statuses(dbt("test", *reconcile, check=False)).values()) == {"fail"}
        db.execute("update marts.customer_spend set total_spend = total_spend - 0.01 where customer_id = %s", (CAROL,))

        # The damaged row as if this run had transformed it: now in the increment, and caught there too.
        db.execute(
            "update marts.customer_purchases set transformed_at = now() + interval '1 hour' where event_id = %s",
            (damaged,),
        )
        caught = dbt("test", "--select", "customer_purchases", *increment, check=False)
        failed = {uid.split(".")[2] for uid, status in statuses(caught).items() if status == "fail"}
        assert failed == {"positive_customer_purchases_total_price"}, failed
    finally:
        # As it was: a later transformed_at would have the next incremental run count the purchase again.
        db.execute(
            "update marts.customer_purchases set total_price = quantity * unit_price, transformed_at = %s "
            "where event_id = %s",
            (transformed_at, damaged),
        )


@pytest.mark.parametrize(
    "vars_, message",
    [
        ('{"start_date": "2024-03-01"}', "A backfill needs both vars start_date and end_date"),
        ('{"start_date": "2024-3-1", "end_date": "2024-03-02"}', "var start_date must be an ISO date YYYY-MM-DD"),
        ('{"start_date": "2024-03-02", "end_date": "2024-03-02"}', "must be after start_date"),
    ],
)
def test_a_bad_backfill_window_is_refused_with_a_clear_error(vars_, message):
    result = dbt("run", "--select", "customer_spend_daily", "--vars", vars_, check=False)
    assert result["returncode"] != 0
    assert message in result["error"]
