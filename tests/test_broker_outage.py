"""Broker outage: while the broker is down the API refuses purchases quickly (503 + Retry-After), never
answering 202 for an event the broker did not take; when it is back the API recovers without a restart
and the pipeline loads what was bought after the outage."""

from __future__ import annotations

import time

import httpx
import psycopg
import pytest
from support import sign_up

pytestmark = pytest.mark.e2e

GOOD = {"product_name": "Umbrella", "quantity": 1, "unit_price": "15.00", "currency": "USD"}


def test_broker_outage_gives_503_then_recovers_without_restart(api_server, broker, warehouse_dsn):
    from purchases.load import load_available  # the loader's one-shot entry point

    client = httpx.Client(base_url=api_server.url, timeout=30)
    headers = sign_up(client, "outage").headers
    before = client.post("/purchases", json=GOOD, headers=headers)
    assert before.status_code == 202
    load_available(broker.bootstrap, warehouse_dsn)  # drained: an in-memory broker restart loses its log

    broker.stop()
    try:
        answers = []
        for _ in range(5):
            started = time.monotonic()
            answer = client.post("/purchases", json=GOOD, headers=headers)
            answers.append((answer.status_code, answer.headers.get("Retry-After"), time.monotonic() - started))
        assert all(status == 503 for status, _, _ in answers), answers
        assert all(retry_after and int(retry_after) > 0 for _, retry_after, _ in answers), answers
        # Not a speed figure (that is PRODUCE_TIMEOUT_SECONDS, 5 s): this only catches a client left hanging.
        assert all(took < 15 for _, _, took in answers), answers
        assert client.get("/readyz").status_code == 503
    finally:
        broker.start()

    deadline, after = time.monotonic() + 30, None
    while time.monotonic() < deadline:
        after = client.post("/purchases", json=GOOD, headers=headers)
        if after.status_code == 202:
            break
        time.sleep(0.5)
    assert after is not None and after.status_code == 202, after.text
    assert client.get("/readyz").status_code == 200

    load_available(broker.bootstrap, warehouse_dsn)
    with psycopg.connect(warehouse_dsn) as conn:
        ours = ([before.json()["event_id"], after.json()["event_id"]],)
        found = conn.execute(
            "select event_id::text from staging.purchase_events where event_id = any(%s::uuid[])", ours
        ).fetchall()
        rejected = conn.execute(
            "select event_id::text, reason from staging.purchase_events_rejected where event_id = any(%s::uuid[])", ours
        ).fetchall()
    assert sorted(row[0] for row in found) == sorted(ours[0]), f"rejected: {rejected}"
