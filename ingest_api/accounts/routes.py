"""Accounts: sign up, log in (an OAuth2 password form in, a bearer token out), who am I, change password.

Wrong passwords are counted per username, for logging in and changing the password alike; past the limit
both answer 429 (core/login_limiter.py). Passwords are argon2id hashes (core/security.py).
"""

from __future__ import annotations

import uuid
from typing import Annotated

import psycopg
from fastapi import APIRouter, Depends, Response, status
from fastapi.security import OAuth2PasswordRequestForm

from ingest_api import data, errors
from ingest_api.core.login_limiter import LoginLimiter
from ingest_api.core.security import Passwords
from ingest_api.deps import ConnectionDep, CurrentCustomer, LoginLimiterDep, PasswordsDep, TokensDep
from ingest_api.schemas import Customer, CustomerCreate, PasswordChange, Token
from purchases.contract import new_time_ordered_id

router = APIRouter()


@router.post(
    "/customers",
    tags=["customers"],
    status_code=status.HTTP_201_CREATED,
    response_model=Customer,
    responses={**errors.BAD_BODY, **errors.USERNAME_TAKEN, **errors.BAD_SIGN_UP},
    summary="Sign up",
)
async def sign_up(account: CustomerCreate, conn: ConnectionDep, passwords: PasswordsDep) -> Customer:
    if await data.username_taken(conn, account.username):
        raise errors.username_taken(account.username)
    password_hash = await passwords.hash(account.password)
    customer_id = new_time_ordered_id()
    try:
        await data.insert_customer(conn, customer_id, account.username, password_hash)
    except psycopg.errors.UniqueViolation:  # signed up in between
        raise errors.username_taken(account.username) from None
    return Customer(customer_id=customer_id, username=account.username)


def _refuse_if_locked_out(limiter: LoginLimiter, username: str) -> None:
    wait = limiter.retry_after(username)
    if wait is not None:
        raise errors.locked_out(wait)


async def _check_password(
    passwords: Passwords, limiter: LoginLimiter, username: str, password_hash: str | None, password: str, wrong: str
) -> None:
    """401 with `wrong` unless `password` matches `password_hash`; None (no such account) never matches but
    costs one verification all the same, so that a login takes as long either way."""
    # Counted as a failure before checking, so that concurrent guesses cannot all slip under the limit.
    limiter.record_failure(username)
    if not await passwords.verify(password_hash, password):
        raise errors.wrong_password(wrong)
    limiter.reset(username)


@router.post(
    "/auth/token",
    tags=["auth"],
    response_model=Token,
    responses={**errors.WRONG_LOGIN, **errors.LOCKED_OUT},
    summary="Log in: OAuth2 password form -> bearer token",
)
async def log_in(
    form: Annotated[OAuth2PasswordRequestForm, Depends()],
    conn: ConnectionDep,
    tokens: TokensDep,
    limiter: LoginLimiterDep,
    passwords: PasswordsDep,
) -> Token:
    _refuse_if_locked_out(limiter, form.username)
    account = await data.customer_by_username(conn, form.username)
    await _check_password(
        passwords,
        limiter,
        form.username,
        account["password_hash"] if account else None,
        form.password,
        "Wrong username or password",
    )
    return Token(access_token=tokens.issue(account["customer_id"]), expires_in=tokens.ttl_seconds)


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
    },
    summary="Change my password (needs the current one)",
)
async def change_password(
    change: PasswordChange,
    customer_id: CurrentCustomer,
    conn: ConnectionDep,
    limiter: LoginLimiterDep,
    passwords: PasswordsDep,
) -> Response:
    account = await _account(conn, customer_id)
    _refuse_if_locked_out(limiter, account["username"])
    await _check_password(
        passwords,
        limiter,
        account["username"],
        account["password_hash"],
        change.current_password,
        "The current password is wrong",
    )
    new_hash = await passwords.hash(change.new_password)
    await data.update_password_hash(conn, customer_id, new_hash)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
