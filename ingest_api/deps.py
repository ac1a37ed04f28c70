"""What the routes are given: made once per process in `lifespan`, handed out with `Depends`.

The settings (`purchases.settings.Settings`, put on app.state by create_app), the database pool and a
connection from it, the producer, the token codec, the login limiter, password hashing, and the calling
customer (from the bearer token, checked offline, revoked sessions included). The buy routes get the
customer and the producer the same way but without FastAPI's dependency solving (accept/hot_path.py).

Two tasks run beside the requests in every worker: the session revocations' refresh (accounts/sessions.py)
and the pruning of old login failures (core/login_limiter.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated

from fastapi import Depends, FastAPI, Request
from fastapi.security import OAuth2PasswordBearer
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from ingest_api import errors
from ingest_api.accept.producer import PurchaseProducer
from ingest_api.accounts.sessions import SessionRevocations
from ingest_api.core.db import make_pool
from ingest_api.core.login_limiter import LoginLimiter
from ingest_api.core.security import InvalidToken, Passwords, TokenCodec
from purchases.settings import Settings


@asynccontextmanager
async def lifespan(app: FastAPI):
    settings: Settings = app.state.settings
    app.state.tokens = TokenCodec(settings.jwt_secret, settings.jwt_ttl_seconds)
    app.state.passwords = Passwords(settings.password_hash_concurrency, settings.password_hash_queue)
    app.state.pool = make_pool(settings)
    await app.state.pool.open(wait=False)
    app.state.login_limiter = LoginLimiter(
        app.state.pool, settings.login_max_failures, settings.login_failure_window_seconds
    )
    # A small linger keeps the 202 fast; the broker batches what is in flight anyway.
    app.state.producer = PurchaseProducer(
        settings.kafka_bootstrap_servers,
        settings.purchases_topic,
        settings.produce_timeout_seconds,
        settings.producer_linger_ms,
    )
    await app.state.producer.start()
    revocations = SessionRevocations(app.state.pool, app.state.tokens, settings.session_revocation_refresh_seconds)
    background = [
        asyncio.create_task(revocations.refresh_forever(), name="session revocations"),
        # Every tenth of the window: the table holds at most ~1.1 windows' worth of usernames.
        asyncio.create_task(
            app.state.login_limiter.prune_forever(max(1.0, settings.login_failure_window_seconds / 10)),
            name="login failures pruning",
        ),
    ]
    # What exists now lives as long as the process: keep it out of the garbage collector's full
    # passes, which would otherwise walk it all, every time, in the middle of requests.
    gc.freeze()
    try:
        yield
    finally:
        for task in background:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await app.state.producer.stop()
        await app.state.pool.close()
        app.state.passwords.close()


# Each is `async`: FastAPI runs a plain `def` dependency in a worker thread.


async def get_pool(request: Request) -> AsyncConnectionPool:
    return request.app.state.pool


async def get_connection(request: Request) -> AsyncIterator[AsyncConnection]:
    """A pooled connection in autocommit mode (each statement its own transaction), back to the pool after."""
    async with request.app.state.pool.connection() as conn:
        yield conn


async def get_producer(request: Request) -> PurchaseProducer:
    return request.app.state.producer


async def get_tokens(request: Request) -> TokenCodec:
    return request.app.state.tokens


async def get_login_limiter(request: Request) -> LoginLimiter:
    return request.app.state.login_limiter


async def get_passwords(request: Request) -> Passwords:
    return request.app.state.passwords


# auto_error=False: a missing token gets the same clear 401 as a bad one, from current_customer_id.
oauth2_scheme = OAuth2PasswordBearer(tokenUrl="auth/token", auto_error=False)


async def current_customer_id(request: Request, token: Annotated[str | None, Depends(oauth2_scheme)]) -> uuid.UUID:
    """The customer the bearer token was issued to, checked offline (signature and expiry)."""
    if not token:
        raise errors.missing_token()
    return customer_for_token(request, token)


def customer_for_token(request: Request, token: str) -> uuid.UUID:
    """Signature, expiry and revocation (a password changed since the token was issued): no database read."""
    try:
        return request.app.state.tokens.customer_of(token)
    except InvalidToken as exc:
        raise errors.not_authenticated(str(exc)) from None


PoolDep = Annotated[AsyncConnectionPool, Depends(get_pool)]
ConnectionDep = Annotated[AsyncConnection, Depends(get_connection)]
ProducerDep = Annotated[PurchaseProducer, Depends(get_producer)]
TokensDep = Annotated[TokenCodec, Depends(get_tokens)]
LoginLimiterDep = Annotated[LoginLimiter, Depends(get_login_limiter)]
PasswordsDep = Annotated[Passwords, Depends(get_passwords)]
CurrentCustomer = Annotated[uuid.UUID, Depends(current_customer_id)]
