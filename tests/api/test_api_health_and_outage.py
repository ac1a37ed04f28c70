"""Health, readiness, docs and the page; and a broker outage: 503 with Retry-After, never a 202 for an event
the broker did not take, and recovery without restarting the API."""

from __future__ import annotations

import time
import uuid

import pytest
from api_support import ensure_api_topic, read_topic

GOOD = {"product_name": "Umbrella", "quantity": 1, "unit_price": "15.00", "currency": "USD"}


def test_health_readiness_docs_and_page(client):
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json() == {"status": "ready", "checks": {"database": "ok", "broker": "ok"}}
    assert "swagger" in client.get("/docs").text.lower()
    paths = client.get("/openapi.json").json()["paths"]
    assert {
        "/customers",
        "/auth/token",
        "/customers/me/password",
        "/purchases",
        "/purchases/batch",
        "/customers/me/purchases",
        "/customers/{customer_id}/purchases",
        "/purchases/{event_id}",
        "/customers/me/spend",
        "/healthz",
        "/readyz",
    } <= set(paths)
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert 'id="buy-form"' in page.text


def test_nothing_updates_or_deletes_a_purchase(client, customer):
    event_id = client.post("/purchases", json=GOOD, headers=customer.headers).json()["event_id"]
    for method in ("PUT", "PATCH", "DELETE"):
        assert client.request(method, f"/purchases/{event_id}", headers=customer.headers).status_code == 405
        assert client.request(method, "/purchases", headers=customer.headers).status_code == 405


@pytest.mark.slow
def test_a_broker_outage_answers_503_then_the_api_recovers_by_itself(api, client, customer, broker):
    assert client.post("/purchases", json=GOOD, headers=customer.headers).status_code == 202
    refused = f"refused-{uuid.uuid4().hex}"
    broker.stop()
    try:
        answers = []
        for path, body in (
            ("/purchases", {**GOOD, "product_name": refused}),
            ("/purchases/batch", {"purchases": [{**GOOD, "product_name": refused}] * 3}),
            ("/purchases", {**GOOD, "product_name": refused}),
        ):
            started = time.monotonic()
            answer = client.post(path, json=body, headers=customer.headers)
            answers.append((answer.status_code, answer.headers.get("Retry-After"), time.monotonic() - started))
        assert all(status == 503 for status, _, _ in answers), answers
        assert all(retry_after and int(retry_after) > 0 for _, retry_after, _ in answers), answers
        # Not a speed figure (that is PRODUCE_TIMEOUT_SECONDS, 5 s): this only catches a client left hanging.
        assert all(took < 15 for _, _, took in answers), answers
        not_ready = client.get("/readyz")
        # Which dependency is down, not why (that is in the API's log).
        assert not_ready.status_code == 503
        assert not_ready.json() == {"status": "not ready", "checks": {"database": "ok", "broker": "unavailable"}}
    finally:
        broker.start()  # the session's broker: back for every later test
        ensure_api_topic(broker.bootstrap)

    deadline, after = time.monotonic() + 60, None
    while time.monotonic() < deadline:
        after = client.post("/purchases", json=GOOD, headers=customer.headers)
        if after.status_code == 202:
            break
        assert after.status_code == 503, after.text
        time.sleep(0.5)
    assert after is not None and after.status_code == 202, after.text
    assert client.get("/readyz").status_code == 200
    on_topic = [message.value() for message in read_topic(api.bootstrap)]
    assert any(after.json()["event_id"].encode() in value for value in on_topic)
    assert not any(refused.encode() in value for value in on_topic)  # refused means not recorded later either


@pytest.fixture(scope="module")
def api_without_database(api):
    """A second API whose database is unreachable (nothing listens on its port)."""
    from api_support import Api, free_port

    env = dict(api.env, WAREHOUSE_DSN=f"postgresql://postgres@127.0.0.1:{free_port()}/nowhere")
    server = Api(free_port(), env, api.bootstrap)
    server.start()
    yield server
    server.stop()


@pytest.mark.slow
def test_without_the_database_reads_answer_503_and_buying_goes_on(api_without_database, customer):
    import httpx

    with httpx.Client(base_url=api_without_database.url, timeout=30) as other:
        ready = other.get("/readyz")
        assert ready.status_code == 503
        assert ready.json() == {"status": "not ready", "checks": {"database": "unavailable", "broker": "ok"}}
        from support import LOG_DIR

        assert "readiness: database unavailable: " in (LOG_DIR / api_without_database.log_name).read_text()
        signup = other.post("/customers", json={"username": f"x_{uuid.uuid4().hex[:8]}", "password": "password1"})
        assert signup.status_code == 503 and signup.headers["Retry-After"]
        # The token is checked offline and nothing on the buy path touches the database.
        bought = other.post("/purchases", json=GOOD, headers=customer.headers)
        assert bought.status_code == 202, bought.text


def test_a_body_that_is_not_utf8_json_answers_400_where_fastapi_parses_it(client):
    answer = client.post("/customers", content=b"\xff\xfe{", headers={"Content-Type": "application/json"})
    assert answer.status_code == 400
