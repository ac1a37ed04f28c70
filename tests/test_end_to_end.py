"""The walking skeleton, end to end on real parts: HTTP -> broker -> Airflow ingest DAG -> staging
-> Airflow transform DAG (dbt) -> marts -> the API's reads. Totals are checked to the cent."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import httpx
import psycopg
import pytest
from support import load_dag, sign_up

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.e2e


def run_dag(dag_id: str, **conf):
    from airflow.utils.state import DagRunState

    run = load_dag(dag_id).test(run_conf=conf or None)
    assert run.state == DagRunState.SUCCESS, f"{dag_id} ended {run.state}"
    return run


def announcements(since) -> list[dict]:
    """What purchases_ingest announced on its Asset (the scheduler hands it to purchases_quality)."""
    from airflow import settings
    from airflow.models.asset import AssetEvent, AssetModel

    with settings.Session() as session:
        events = (
            session.query(AssetEvent)
            .join(AssetModel, AssetEvent.asset_id == AssetModel.id)
            .filter(AssetModel.name == "staging_purchase_events_loaded", AssetEvent.timestamp >= since)
            .all()
        )
        return [event.extra for event in events]


def test_purchases_flow_from_http_to_marts(api_server, airflow_db, warehouse_dsn, transform_manifest):
    client = httpx.Client(base_url=api_server.url, timeout=30)
    ada, bob = sign_up(client, "ada"), sign_up(client, "bob")
    bought = [
        (ada, {"product_name": "Coffee beans", "quantity": 3, "unit_price": "12.35", "currency": "USD"}, "k1"),
        (ada, {"product_name": "Filter papers", "quantity": 1, "unit_price": 0.1, "currency": "USD"}, None),
        (ada, {"product_name": "Grinder", "quantity": 1, "unit_price": "999999.99", "currency": "EUR"}, None),
        (
            bob,
            {
                "product_name": "Tea",
                "description": "green, ünïcode ✓",
                "quantity": 7,
                "unit_price": "0.07",
                "currency": "USD",
            },
            "k1",
        ),  # same key as ada's: another customer, another event
    ]
    event_ids = {}
    for customer, body, key in bought:
        headers = dict(customer.headers, **({"Idempotency-Key": key} if key else {}))
        answer = client.post("/purchases", json=body, headers=headers)
        assert answer.status_code == 202, answer.text
        assert answer.json()["status"] == "accepted"
        event_ids.setdefault(customer.id, []).append(answer.json()["event_id"])
    # A client retry of ada's first purchase: same event id, counted once.
    retry = client.post("/purchases", json=bought[0][1], headers=dict(ada.headers, **{"Idempotency-Key": "k1"}))
    assert retry.status_code == 202 and retry.json()["event_id"] == event_ids[ada.id][0]
    assert event_ids[ada.id][0] != event_ids[bob.id][0]

    ingest_started = datetime.now(UTC)
    run_dag("purchases_ingest", window_seconds=3)
    assert announcements(ingest_started), "the ingest run loaded rows, so it must announce them"
    run_dag("purchases_quality")
    run_dag("purchases_transform")

    ours = ([ada.id, bob.id],)  # other tests share the session's warehouse
    with psycopg.connect(warehouse_dsn) as conn:
        staged = conn.execute(
            "select count(*), count(distinct event_id) from staging.purchase_events "
            "where customer_id = any(%s::uuid[])",
            ours,
        ).fetchone()
        spend = conn.execute(
            "select customer_id::text, currency, total_spend, purchase_count from marts.customer_spend "
            "where customer_id = any(%s::uuid[])",
            ours,
        ).fetchall()
    assert staged == (4, 4)
    assert sorted(spend) == sorted(
        [
            (ada.id, "USD", Decimal("37.15"), 2),
            (ada.id, "EUR", Decimal("999999.99"), 1),
            (bob.id, "USD", Decimal("0.49"), 1),
        ]
    )

    listed = client.get("/customers/me/purchases", headers=ada.headers).json()["items"]
    assert sorted(item["event_id"] for item in listed) == sorted(event_ids[ada.id])
    assert {item["event_id"]: Decimal(str(item["total_price"])) for item in listed}[event_ids[ada.id][0]] == Decimal(
        "37.05"
    )
    totals = client.get("/customers/me/spend", headers=ada.headers).json()["totals"]
    assert {t["currency"]: Decimal(str(t["total_spend"])) for t in totals} == {
        "USD": Decimal("37.15"),
        "EUR": Decimal("999999.99"),
    }
    bob_listed = client.get("/customers/me/purchases", headers=bob.headers).json()["items"]
    assert [item["event_id"] for item in bob_listed] == event_ids[bob.id]
