"""Logging in: an OAuth2 password form in, a bearer token out; password guessing is cut off with 429."""
from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Request, status
from fastapi.security import OAuth2PasswordRequestForm

from ingest_api.api.deps import ConnectionDep, LoginLimiterDep, TokensDep
from ingest_api.core.login_limiter import LoginLimiter
from ingest_api.core.security import verify_password
from ingest_api.schemas import Problem, Token

router = APIRouter(tags=["auth"])

AUTH_ERRORS = {401: {"model": Problem, "description": "Missing, forged, tampered or expired token."}}
TOO_MANY = {429: {"model": Problem, "description": "Too many wrong passwords for this username; see Retry-After.",
                  "headers": {"Retry-After": {"schema": {"type": "integer"}, "description": "Seconds."}}}}


def locked_out(limiter: LoginLimiter, username: str) -> None:
    wait = limiter.retry_after(username)
    if wait is not None:
        raise HTTPException(status.HTTP_429_TOO_MANY_REQUESTS,
                            f"Too many wrong passwords for this username: try again in {wait} s",
                            headers={"Retry-After": str(wait)})


async def check_password(request: Request, limiter: LoginLimiter, username: str, password_hash: str | None,
                         password: str, wrong: str) -> None:
    # Counted as a failure before checking, so that concurrent guesses cannot all slip under the limit.
    limiter.record_failure(username)
    if not await request.app.state.run_slow(verify_password, password_hash, password):
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, wrong, headers={"WWW-Authenticate": "Bearer"})
    limiter.reset(username)


@router.post("/auth/token", response_model=Token,
             responses={401: {"model": Problem, "description": "Wrong username or password."}, **TOO_MANY},
             summary="Log in: OAuth2 password form -> bearer token")
async def log_in(request: Request, form: Annotated[OAuth2PasswordRequestForm, Depends()], conn: ConnectionDep,
                 tokens: TokensDep, limiter: LoginLimiterDep) -> Token:
    locked_out(limiter, form.username)
    row = await (await conn.execute("select customer_id, password_hash from app.customers where username = %s",
                                    (form.username,))).fetchone()
    await check_password(request, limiter, form.username, row[1] if row else None, form.password,
                         "Wrong username or password")
    return Token(access_token=tokens.issue(row[0]), expires_in=tokens.ttl_seconds)
