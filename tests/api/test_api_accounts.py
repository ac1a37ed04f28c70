"""Accounts and tokens: sign up (201/409/422), log in (200/401/429), change password (204/401/422), tokens."""

from __future__ import annotations

import base64
import json
import os
import time
import uuid

import jwt
import psycopg
import pytest

SECRET = os.environ["JWT_SECRET"]  # the API under test was started with the session's environment
GOOD = {"product_name": "Tea", "quantity": 1, "unit_price": "3.20"}


def test_sign_up_creates_a_customer_with_a_server_made_time_ordered_id(client, api_dsn):
    username = f"ada_{uuid.uuid4().hex[:8]}"
    first = client.post("/customers", json={"username": username, "password": "correct horse"})
    second = client.post("/customers", json={"username": f"{username}x", "password": "correct horse"})
    assert first.status_code == second.status_code == 201
    assert first.json()["username"] == username
    ids = [uuid.UUID(answer.json()["customer_id"]) for answer in (first, second)]
    assert all(customer_id.version == 7 for customer_id in ids)
    assert ids[0] < ids[1]  # time-ordered
    with psycopg.connect(api_dsn) as conn:
        stored = conn.execute(
            "select customer_id, password_hash from app.customers where username = %s", (username,)
        ).fetchone()
    assert stored[0] == ids[0]
    assert stored[1].startswith("$argon2id$") and "correct horse" not in stored[1]


def test_sign_up_ignores_a_client_supplied_id(client):
    answer = client.post(
        "/customers",
        json={"username": f"eve_{uuid.uuid4().hex[:8]}", "password": "password1", "customer_id": str(uuid.uuid4())},
    )
    assert answer.status_code == 422
    assert answer.json()["detail"][0]["loc"] == ["body", "customer_id"]


def test_a_taken_username_answers_409(client, customer):
    answer = client.post("/customers", json={"username": customer.username, "password": "another-password"})
    assert answer.status_code == 409
    assert customer.username in answer.json()["detail"]


@pytest.mark.parametrize(
    "body, field",
    [
        ({"username": "ab", "password": "password1"}, "username"),
        ({"username": "x" * 65, "password": "password1"}, "username"),
        ({"username": "has space", "password": "password1"}, "username"),
        ({"username": "semi;colon", "password": "password1"}, "username"),
        ({"username": "fine_name", "password": "short"}, "password"),
        ({"username": "fine_name", "password": "p" * 129}, "password"),
        ({"password": "password1"}, "username"),
    ],
)
def test_bad_sign_up_answers_422_naming_the_field(client, body, field):
    answer = client.post("/customers", json=body)
    assert answer.status_code == 422
    assert [error["loc"] for error in answer.json()["detail"]] == [["body", field]]


def test_log_in_gives_a_bearer_token_for_the_customer(client, customer):
    answer = client.post("/auth/token", data={"username": customer.username, "password": customer.password})
    assert answer.status_code == 200
    token = answer.json()
    assert token["token_type"] == "bearer" and token["expires_in"] > 0
    claims = jwt.decode(token["access_token"], options={"verify_signature": False})
    assert claims["sub"] == customer.id and claims["exp"] > time.time()
    assert client.get("/customers/me", headers={"Authorization": f"Bearer {token['access_token']}"}).json() == {
        "customer_id": customer.id,
        "username": customer.username,
    }


def test_a_wrong_password_or_unknown_user_answers_401(client, customer):
    wrong = client.post("/auth/token", data={"username": customer.username, "password": "not-the-password"})
    unknown = client.post("/auth/token", data={"username": f"nobody_{uuid.uuid4().hex}", "password": "whatever1"})
    assert wrong.status_code == unknown.status_code == 401
    assert wrong.json() == unknown.json()  # which one was wrong is not told


def log_in(client, username: str, password: str) -> int:
    return client.post("/auth/token", data={"username": username, "password": password}).status_code


def test_five_wrong_passwords_lock_the_username_out_with_429(client, customer, other_customer):
    for _ in range(5):
        assert log_in(client, customer.username, "guess-123") == 401
    locked = client.post("/auth/token", data={"username": customer.username, "password": customer.password})
    assert locked.status_code == 429  # even the right password, until the window has passed
    assert 0 < int(locked.headers["Retry-After"]) <= 15 * 60
    # Per username: another customer logs in as usual.
    assert log_in(client, other_customer.username, other_customer.password) == 200


def test_a_right_password_clears_earlier_mistakes(client, customer):
    for _ in range(4):
        assert log_in(client, customer.username, "guess-123") == 401
    assert log_in(client, customer.username, customer.password) == 200
    for _ in range(4):
        assert log_in(client, customer.username, "guess-123") == 401
    assert log_in(client, customer.username, customer.password) == 200


def test_changing_the_password_needs_the_current_one(client, customer):
    wrong = client.post(
        "/customers/me/password",
        headers=customer.headers,
        json={"current_password": "not-it-at-all", "new_password": "brand-new-password"},
    )
    assert wrong.status_code == 401
    too_short = client.post(
        "/customers/me/password",
        headers=customer.headers,
        json={"current_password": customer.password, "new_password": "short"},
    )
    assert too_short.status_code == 422 and too_short.json()["detail"][0]["loc"] == ["body", "new_password"]
    no_token = client.post(
        "/customers/me/password", json={"current_password": customer.password, "new_password": "brand-new-password"}
    )
    assert no_token.status_code == 401

    changed = client.post(
        "/customers/me/password",
        headers=customer.headers,
        json={"current_password": customer.password, "new_password": "brand-new-password"},
    )
    assert changed.status_code == 204 and changed.content == b""
    assert (
        client.post("/auth/token", data={"username": customer.username, "password": customer.password}).status_code
        == 401
    )
    assert (
        client.post("/auth/token", data={"username": customer.username, "password": "brand-new-password"}).status_code
        == 200
    )


def _b64(data: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")


def test_forged_tampered_unsigned_and_expired_tokens_answer_401(client, customer):
    header, payload, signature = customer.token.split(".")
    someone_else = str(uuid.uuid4())
    claims = jwt.decode(customer.token, options={"verify_signature": False})
    forged = {
        "garbage": "not-a-token",
        "tampered payload": ".".join([header, _b64(dict(claims, sub=someone_else)), signature]),
        "unsigned (alg none)": ".".join([_b64({"alg": "none", "typ": "JWT"}), _b64(claims), ""]),
        "signed with another secret": jwt.encode(claims, "another-secret-another-secret-32b", algorithm="HS256"),
        # Signed with the API's own secret, but expired / without an expiry:
        "expired": jwt.encode(dict(claims, exp=int(time.time()) - 10), SECRET, algorithm="HS256"),
        "no expiry": jwt.encode({"sub": customer.id, "iat": int(time.time())}, SECRET, algorithm="HS256"),
    }
    for what, token in forged.items():
        headers = {"Authorization": f"Bearer {token}"}
        assert client.get("/customers/me/purchases", headers=headers).status_code == 401, what
        answer = client.post("/purchases", json=GOOD, headers=headers)
        assert answer.status_code == 401, what
        assert answer.headers["WWW-Authenticate"] == "Bearer"
    assert client.post("/purchases", json=GOOD, headers={"Authorization": f"Basic {customer.token}"}).status_code == 401
    assert client.post("/purchases", json=GOOD).status_code == 401
    assert client.get("/customers/me/spend").status_code == 401


def test_a_signup_with_the_same_name_from_two_clients_creates_one_account(client):
    import concurrent.futures

    username = f"race_{uuid.uuid4().hex[:8]}"
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        statuses = sorted(
            pool.map(
                lambda _: (
                    client.post("/customers", json={"username": username, "password": "password-123"}).status_code
                ),
                range(4),
            )
        )
    assert statuses == [201, 409, 409, 409]
