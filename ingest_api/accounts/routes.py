"""Accounts: sign up, log in (an OAuth2 password form in, a bearer token out), who am I, change password.

Hashing a password (argon2id, ~120 ms and ~190 ms of CPU here) never holds a database connection: these
routes take one from the pool for each query only (`async with pool.connection()`), not for the request.
Before that, each takes a place for its hashing (core/security.py, Passwords.admitted): a worker hashes
API_PASSWORD_HASH_CONCURRENCY passwords at once and lets API_PASSWORD_HASH_QUEUE more wait; beyond, 503 +
Retry-After at once, with no database work. So a flood of logins costs the reads and buys nothing but the
refusals: they do not wait for connections behind it (measured in tests/api/test_api_login_under_attack.py).

Wrong passwords are counted per username for every worker alike, for logging in and changing the password
alike; past the limit both answer 429 (core/login_limiter.py). A password change ends the sessions issued
before it (accounts/sessions.py).
"""

from __future__ import annotations

import re
import time
import uuid
from datetime import UTC, datetime
from typing import Annotated

import psycopg
from fastapi import APIRouter, Depends, Response, status
from fastapi.security import OAuth2PasswordRequestForm

from ingest_api import data, errors
from ingest_api.core.login_limiter import LoginLimiter
from ingest_api.deps import ConnectionDep, CurrentCustomer, LoginLimiterDep, PasswordsDep, PoolDep, TokensDep
from ingest_api.schemas import USERNAME_PATTERN, Customer, CustomerCreate, PasswordChange, Token
from purchases.contract import new_time_ordered_id

router = APIRouter()

# What sign-up accepts as a username (schemas.Username); fullmatch, so that a trailing newline is no match.
_POSSIBLE_USERNAME = re.compile(USERNAME_PATTERN)
_WRONG_LOGIN = "Wrong username or password"


@router.post(
    "/customers",
    tags=["customers"],
    status_code=status.HTTP_201_CREATED,
    response_model=Customer,
    responses={**errors.BAD_BODY, **errors.USERNAME_TAKEN, **errors.BAD_SIGN_UP, **errors.PASSWORDS_BUSY},
    summary="Sign up",
)
async def sign_up(account: CustomerCreate, pool: PoolDep, passwords: PasswordsDep) -> Customer:
    with passwords.admitted():
        async with pool.connection() as conn:
            taken = await data.username_taken(conn, account.username)
        if taken:
            raise errors.username_taken(account.username)
        password_hash = await passwords.hash(account.password)
        customer_id = new_time_ordered_id()
        try:
            async with pool.connection() as conn:
                await data.insert_customer(conn, customer_id, account.username, password_hash)
        except psycopg.errors.UniqueViolation:  # signed up in between
            raise errors.username_taken(account.username) from None
    return Customer(customer_id=customer_id, username=account.username)


async def _count_attempt(limiter: LoginLimiter, username: str) -> None:
    """429 if `username` is locked out; else the attempt is counted as a failure, before the password is
    checked, so that concurrent guesses cannot all slip under the limit."""
    wait = await limiter.count_attempt(username)
    if wait is not None:
        raise errors.locked_out(wait)


def _refuse_if_known_locked_out(limiter: LoginLimiter, username: str) -> None:
    wait = limiter.known_lockout(username)
    if wait is not None:
        raise errors.locked_out(wait)


@router.post(
    "/auth/token",
    tags=["auth"],
    response_model=Token,
    responses={**errors.WRONG_LOGIN, **errors.LOCKED_OUT, **errors.PASSWORDS_BUSY},
    summary="Log in: OAuth2 password form -> bearer token",
)
async def log_in(
    form: Annotated[OAuth2PasswordRequestForm, Depends()],
    pool: PoolDep,
    tokens: TokensDep,
    limiter: LoginLimiterDep,
    passwords: PasswordsDep,
) -> Token:
    username = form.username
    # A username sign-up would refuse has no account: the same 401 as any unknown one, which tells nothing
    # the public pattern does not (every username the pattern allows still costs the same argon2 work,
    # known or not). Without the database and without counting: such guesses cannot hit an account.
    if not _POSSIBLE_USERNAME.fullmatch(username):
        raise errors.wrong_password(_WRONG_LOGIN)
    _refuse_if_known_locked_out(limiter, username)
    with passwords.admitted():
        await _count_attempt(limiter, username)
        # The token's `iat` is taken before the account is read: if a password change commits meanwhile,
        # a token got with the old password is older than the change (accounts/sessions.py) and is refused.
        issued_at = time.time()
        async with pool.connection() as conn:
            account = await data.customer_by_username(conn, username)
        # No such account still costs one verification, so that a login takes as long either way.
        if not await passwords.verify(account["password_hash"] if account else None, form.password):
            raise errors.wrong_password(_WRONG_LOGIN)
        await limiter.clear(username)
    return Token(access_token=tokens.issue(account["customer_id"], issued_at), expires_in=tokens.ttl_seconds)


async def _account(conn: psycopg.AsyncConnection, customer_id: uuid.UUID) -> dict:
    account = await data.customer_by_id(conn, customer_id)
    if account is None:  # a valid token of an account that is gone
        raise errors.not_authenticated("no such account")
    return account


@router.get(
    "/customers/me", tags=["customers"], response_model=Customer, responses=errors.AUTH_ERRORS, summary="Who am I"
)
async def me(customer_id: CurrentCustomer, conn: ConnectionDep) -> Customer:
    account = await _account(conn, customer_id)
    return Customer(customer_id=customer_id, username=account["username"])


def _utc(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


@router.post(
    "/customers/me/password",
    tags=["customers"],
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses={
        **errors.AUTH_ERRORS,
        **errors.BAD_BODY,
        **errors.BAD_NEW_PASSWORD,
        **errors.LOCKED_OUT_OF_PASSWORD_CHANGE,
        **errors.PASSWORDS_BUSY,
    },
    summary="Change my password (needs the current one); ends every session issued before",
)
async def change_password(
    change: PasswordChange,
    customer_id: CurrentCustomer,
    pool: PoolDep,
    tokens: TokensDep,
    limiter: LoginLimiterDep,
    passwords: PasswordsDep,
) -> Response:
    with passwords.admitted():
        async with pool.connection() as conn:
            account = await _account(conn, customer_id)
        username = account["username"]
        _refuse_if_known_locked_out(limiter, username)
        await _count_attempt(limiter, username)
        if not await passwords.verify(account["password_hash"], change.current_password):
            raise errors.wrong_password("The current password is wrong")
        await limiter.clear(username)
        new_hash = await passwords.hash(change.new_password)
        async with pool.connection() as conn:
            # Stamped before the update (should the second statement never run, the change still revokes) and
            # again once the new hash is committed: a login that read the old hash took its `iat` before that.
            await data.update_password_hash(conn, customer_id, new_hash, _utc(time.time()))
            changed_at = time.time()
            await data.mark_password_changed(conn, customer_id, _utc(changed_at))
    tokens.revoke_issued_before(customer_id, changed_at)  # here at once; the other workers within seconds
    return Response(status_code=status.HTTP_204_NO_CONTENT)
