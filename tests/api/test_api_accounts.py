"""Accounts and tokens: sign up (201/409/422), log in (200/401/429), change password (204/401/422), tokens,
and the wrong-password limit as Postgres keeps it (app.login_failures)."""

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


def failures_kept(api_dsn: str, username: str) -> list | None:
    with psycopg.connect(api_dsn) as conn:
        row = conn.execute("select failed_at from app.login_failures where username = %s", (username,)).fetchone()
    return row[0] if row else None


@pytest.mark.parametrize("username", ["ab", "x" * 65, "has space", "semi;colon", "newline\n", "ünïcode", ""])
def test_a_username_that_cannot_exist_answers_the_same_401_without_being_counted(client, api_dsn, username):
    unknown = client.post("/auth/token", data={"username": f"nobody_{uuid.uuid4().hex}", "password": "whatever1"})
    impossible = client.post("/auth/token", data={"username": username, "password": "whatever1"})
    if username == "":  # the form requires a username: FastAPI's own 422, as before
        assert impossible.status_code == 422
        return
    assert impossible.status_code == unknown.status_code == 401
    assert impossible.json() == unknown.json() and impossible.headers["WWW-Authenticate"] == "Bearer"
    assert failures_kept(api_dsn, username) is None  # never reached the limiter (nor the database)


def test_failures_are_kept_in_postgres_bounded_and_cleared(client, customer, api_dsn):
    for _ in range(5):
        assert log_in(client, customer.username, "guess-123") == 401
    for _ in range(3):
        assert log_in(client, customer.username, customer.password) == 429  # refused, and not counted
    kept = failures_kept(api_dsn, customer.username)
    assert len(kept) == 5 and kept == sorted(kept)


def test_the_shared_count_and_its_window_in_postgres(api_dsn):
    """data.py's statements, on the API tests' database: at most `max` per window, the wait until the oldest
    leaves it, then counted again; pruning forgets the usernames whose newest failure left the window."""
    import asyncio
    from datetime import timedelta

    from ingest_api import data

    window, username, stale = timedelta(seconds=1.5), f"window_{uuid.uuid4().hex[:8]}", f"stale_{uuid.uuid4().hex[:8]}"

    async def run():
        async with await psycopg.AsyncConnection.connect(api_dsn, autocommit=True) as conn:
            counted = [await data.count_login_attempt(conn, username, 3, window) for _ in range(5)]
            wait = await data.login_retry_after(conn, username, 3, window)
            await asyncio.sleep(window.total_seconds() + 0.1)
            again = await data.count_login_attempt(conn, username, 3, window)
            assert await data.login_retry_after(conn, username, 3, window) is None  # one recent: not locked
            await conn.execute(
                "insert into app.login_failures values (%(u)s, array[now() - %(h)s], now() - %(h)s)",
                {"u": stale, "h": timedelta(hours=1)},
            )
            await data.prune_login_failures(conn, window)
            left = await (
                await conn.execute(
                    "select username from app.login_failures where username in (%s, %s)", (username, stale)
                )
            ).fetchall()
            return counted, wait, again, left

    counted, wait, again, left = asyncio.run(run())
    assert counted == [True, True, True, False, False]
    assert 0 < wait <= window.total_seconds()
    assert again is True
    assert left == [(username,)]  # the stale one pruned (here, or by an API worker just before)
    assert len(failures_kept(api_dsn, username)) == 1  # the old ones went when it was counted again


def test_password_hashing_takes_a_place_or_is_refused_at_once():
    from ingest_api.core.security import Passwords, PasswordsBusy

    passwords = Passwords(at_once=1, queue=1)
    try:
        with passwords.admitted(), passwords.admitted():
            with pytest.raises(PasswordsBusy):
                with passwords.admitted():
                    pass
        with passwords.admitted():  # the places are given back
            assert passwords.admitted_now == 1
    finally:
        passwords.close()


def test_each_worker_remembers_lockouts_until_they_end_and_stays_bounded(monkeypatch):
    from ingest_api.core import login_limiter

    now = [1000.0]
    monkeypatch.setattr(login_limiter.time, "monotonic", lambda: now[0])
    limiter = login_limiter.LoginLimiter(None, max_failures=5, window_seconds=900, remembered_lockouts=100)
    limiter._remember_lockout("ada", 120)
    assert limiter.known_lockout("ada") == 120 and limiter.known_lockout("bob") is None
    now[0] += 119.5
    assert limiter.known_lockout("ada") == 1
    now[0] += 0.5
    assert limiter.known_lockout("ada") is None  # over: the database decides again
    for i in range(1000):
        limiter._remember_lockout(f"user{i}", 60)
    assert len(limiter._locked_until) <= 100


@pytest.mark.parametrize("secret", ["", "x" * 31, "é" * 15])
def test_the_api_refuses_to_start_with_a_jwt_secret_shorter_than_32_bytes(api, secret):
    """The real server, started with a short secret, exits at once naming the setting."""
    import subprocess
    import sys

    from support import ROOT, free_port

    env = dict(api.env, JWT_SECRET=secret, API_HOST="127.0.0.1", API_PORT=str(free_port()))
    done = subprocess.run(
        [sys.executable, "-m", "ingest_api"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert "JWT_SECRET is" in done.stderr and "at least 32" in done.stderr
