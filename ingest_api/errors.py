"""Every error the API answers, by status code: what /docs says about it, next to what raises it.

Each error is `{"detail": ...}` (FastAPI's shape): a sentence, or for 422 a list naming each failing field.
The dicts are `responses=` entries for the routes; the functions make the exceptions the routes raise.
422s are FastAPI's own RequestValidationError, answered by its handler; the buy routes raise the same
from their hand-made validation (accept/hot_path.py). The 503s come from exception handlers, at the end.
"""

from __future__ import annotations

import logging

import psycopg
from fastapi import HTTPException, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from psycopg_pool import PoolTimeout
from pydantic import BaseModel

from ingest_api.accept.producer import BrokerUnavailable
from ingest_api.core.security import PasswordsBusy

log = logging.getLogger(__name__)


class Problem(BaseModel):
    """An error; `detail` says what is wrong (for 422, a list naming each failing field)."""

    detail: str | list[dict]


def _documented(status_code: int, description: str, **extra) -> dict:
    return {status_code: {"model": Problem, "description": description, **extra}}


RETRY_AFTER_SECONDS = {"Retry-After": {"schema": {"type": "integer"}, "description": "Seconds."}}

# 400 -------------------------------------------------------------------------------------------------
# FastAPI reads these bodies itself; one that is not UTF-8 JSON at all it answers with 400.
BAD_BODY = _documented(400, "The body is not UTF-8 JSON.")

# 401 -------------------------------------------------------------------------------------------------
AUTH_ERRORS = _documented(401, "Missing, forged, tampered or expired token.")
# A username that cannot exist (not one sign-up would take) gets this same answer, without the database.
WRONG_LOGIN = _documented(401, "Wrong username or password.")
BEARER_CHALLENGE = {"WWW-Authenticate": "Bearer"}


def not_authenticated(reason: str) -> HTTPException:
    return HTTPException(status.HTTP_401_UNAUTHORIZED, f"Not authenticated: {reason}", headers=BEARER_CHALLENGE)


def missing_token() -> HTTPException:
    return not_authenticated("send `Authorization: Bearer <token>`")


def wrong_password(detail: str) -> HTTPException:
    return HTTPException(status.HTTP_401_UNAUTHORIZED, detail, headers=BEARER_CHALLENGE)


# 404 -------------------------------------------------------------------------------------------------
# Another customer's things are answered as if they did not exist.
NOT_YOUR_ACCOUNT = _documented(404, "Not your account.")
NOT_YOUR_PURCHASE = _documented(404, "Not one of your purchases, or not recorded yet (the loader takes seconds).")


def no_such_customer() -> HTTPException:
    return HTTPException(status.HTTP_404_NOT_FOUND, "No such customer")


def no_such_purchase() -> HTTPException:
    return HTTPException(status.HTTP_404_NOT_FOUND, "No such purchase (yet)")


# 409 -------------------------------------------------------------------------------------------------
USERNAME_TAKEN = _documented(409, "The username is taken.")


def username_taken(username: str) -> HTTPException:
    return HTTPException(status.HTTP_409_CONFLICT, f"The username {username!r} is taken")


# 413 -------------------------------------------------------------------------------------------------
BODY_TOO_LARGE = _documented(413, "Body larger than the limit.")


def body_too_large(limit: int) -> HTTPException:
    return HTTPException(status.HTTP_413_REQUEST_ENTITY_TOO_LARGE, f"Request body is larger than {limit} bytes")


# 422 -------------------------------------------------------------------------------------------------
BAD_SIGN_UP = _documented(422, "Bad username or password; `detail` says which.")
BAD_NEW_PASSWORD = _documented(422, "The new password is not 8-128 characters.")
BAD_PURCHASE = _documented(422, "Invalid purchase; `detail` names each failing field.")
BAD_PAGE = _documented(422, "Bad limit or cursor.")


def bad_cursor(cursor: str) -> RequestValidationError:
    return RequestValidationError(
        [
            {
                "type": "value_error",
                "loc": ("query", "cursor"),
                "input": cursor,
                "msg": "not a cursor this API gave out: pass back `next_cursor` unchanged",
            }
        ]
    )


# 429 -------------------------------------------------------------------------------------------------
# Logging in and changing one's password count wrong passwords against the same per-username limit.
LOCKED_OUT = _documented(
    429, "Too many wrong passwords for this username; see Retry-After.", headers=RETRY_AFTER_SECONDS
)
LOCKED_OUT_OF_PASSWORD_CHANGE = _documented(
    429, "Too many wrong passwords; see Retry-After.", headers={"Retry-After": {"schema": {"type": "integer"}}}
)


def locked_out(wait_seconds: int) -> HTTPException:
    return HTTPException(
        status.HTTP_429_TOO_MANY_REQUESTS,
        f"Too many wrong passwords for this username: try again in {wait_seconds} s",
        headers={"Retry-After": str(wait_seconds)},
    )


# 503 -------------------------------------------------------------------------------------------------
BROKER_UNAVAILABLE = _documented(
    503,
    "The broker did not acknowledge the event; retry after `Retry-After` seconds with the same Idempotency-Key.",
    headers=RETRY_AFTER_SECONDS,
)


async def broker_unavailable(request: Request, exc: BrokerUnavailable) -> JSONResponse:
    return JSONResponse(
        {
            "detail": f"The purchase was not accepted, the broker did not acknowledge it ({exc}). "
            "Retry later with the same Idempotency-Key."
        },
        status_code=503,
        headers={"Retry-After": str(request.app.state.settings.broker_retry_after_seconds)},
    )


# Signing up, logging in and changing a password hash a password (argon2id, ~190 ms of CPU); each worker
# runs API_PASSWORD_HASH_CONCURRENCY at once and lets API_PASSWORD_HASH_QUEUE more wait. Beyond, 503 at once
# (raised by core/security.py's Passwords.admitted), before any database work. Retry-After: the smallest
# there is, as a place frees whenever a hash ends (each ~120 ms here, two at once per worker).
PASSWORDS_BUSY_RETRY_AFTER_SECONDS = 1
PASSWORDS_BUSY = _documented(
    503,
    "Too many password checks in progress (or the database is unavailable); retry after `Retry-After` seconds.",
    headers=RETRY_AFTER_SECONDS,
)


async def passwords_busy(_request: Request, _exc: PasswordsBusy) -> JSONResponse:
    return JSONResponse(
        {"detail": "Too many password checks in progress; retry later."},
        status_code=503,
        headers={"Retry-After": str(PASSWORDS_BUSY_RETRY_AFTER_SECONDS)},
    )


async def database_unavailable(_request: Request, exc: Exception) -> JSONResponse:
    log.warning("database unavailable: %s", exc)
    return JSONResponse(
        {"detail": "The database is unavailable; retry later."}, status_code=503, headers={"Retry-After": "5"}
    )


EXCEPTION_HANDLERS = {
    BrokerUnavailable: broker_unavailable,
    PasswordsBusy: passwords_busy,
    psycopg.OperationalError: database_unavailable,
    PoolTimeout: database_unavailable,
}
