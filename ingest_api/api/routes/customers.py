"""Customer accounts: sign up, who am I, change password, and my spend (from the dbt marts)."""
from __future__ import annotations

from datetime import datetime, timezone

import psycopg
from fastapi import APIRouter, HTTPException, Request, Response, status

from ingest_api.api.deps import ConnectionDep, CurrentCustomer, LoginLimiterDep
from ingest_api.api.routes.auth import AUTH_ERRORS, check_password, locked_out
from ingest_api.core.security import hash_password
from ingest_api.schemas import BAD_BODY, Customer, CustomerCreate, PasswordChange, Problem, Spend, SpendTotal
from purchases.contract import new_time_ordered_id

router = APIRouter(prefix="/customers", tags=["customers"])


@router.post("", status_code=status.HTTP_201_CREATED, response_model=Customer,
             responses={**BAD_BODY, 409: {"model": Problem, "description": "The username is taken."},
                        422: {"model": Problem, "description": "Bad username or password; `detail` says which."}},
             summary="Sign up")
async def sign_up(request: Request, account: CustomerCreate, conn: ConnectionDep) -> Customer:
    taken = "select 1 from app.customers where username = %s"
    if await (await conn.execute(taken, (account.username,))).fetchone():
        raise HTTPException(status.HTTP_409_CONFLICT, f"The username {account.username!r} is taken")
    password_hash = await request.app.state.run_slow(hash_password, account.password)
    customer_id = new_time_ordered_id()
    try:
        await conn.execute("insert into app.customers (customer_id, username, password_hash) values (%s, %s, %s)",
                           (customer_id, account.username, password_hash))
    except psycopg.errors.UniqueViolation:  # signed up in between
        raise HTTPException(status.HTTP_409_CONFLICT, f"The username {account.username!r} is taken") from None
    return Customer(customer_id=customer_id, username=account.username)


@router.get("/me", response_model=Customer, responses=AUTH_ERRORS, summary="Who am I")
async def me(customer_id: CurrentCustomer, conn: ConnectionDep) -> Customer:
    row = await (await conn.execute("select username from app.customers where customer_id = %s",
                                    (customer_id,))).fetchone()
    if row is None:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "Not authenticated: no such account",
                            headers={"WWW-Authenticate": "Bearer"})
    return Customer(customer_id=customer_id, username=row[0])


@router.post("/me/password", status_code=status.HTTP_204_NO_CONTENT, response_class=Response,
             responses={**AUTH_ERRORS, **BAD_BODY,
                        422: {"model": Problem, "description": "The new password is not 8-128 characters."},
                        429: {"model": Problem, "description": "Too many wrong passwords; see Retry-After.",
                              "headers": {"Retry-After": {"schema": {"type": "integer"}}}}},
             summary="Change my password (needs the current one)")
async def change_password(request: Request, change: PasswordChange, customer_id: CurrentCustomer,
                          conn: ConnectionDep, limiter: LoginLimiterDep) -> Response:
    row = await (await conn.execute("select username, password_hash from app.customers where customer_id = %s",
                                    (customer_id,))).fetchone()
    if row is None:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "Not authenticated: no such account",
                            headers={"WWW-Authenticate": "Bearer"})
    username, password_hash = row
    locked_out(limiter, username)
    await check_password(request, limiter, username, password_hash, change.current_password,
                         "The current password is wrong")
    new_hash = await request.app.state.run_slow(hash_password, change.new_password)
    await conn.execute("update app.customers set password_hash = %s, updated_at = now() where customer_id = %s",
                       (new_hash, customer_id))
    return Response(status_code=status.HTTP_204_NO_CONTENT)


# Spend comes from dbt's marts.customer_spend. Until dbt first built it there is nothing to sum: an empty
# list, not an error. `as_of` is when it was last built: the newest of its build-time column (dbt's model has
# `last_transformed_at`, indexed), else now.
_BUILD_TIME_COLUMNS = ("last_transformed_at", "built_at", "_built_at", "_loaded_at", "dbt_updated_at")


@router.get("/me/spend", response_model=Spend, responses=AUTH_ERRORS, summary="My total spend per currency")
async def my_spend(customer_id: CurrentCustomer, conn: ConnectionDep) -> Spend:
    now = datetime.now(timezone.utc)
    columns = {row[0] for row in await (await conn.execute(
        "select column_name from information_schema.columns "
        "where table_schema = 'marts' and table_name = 'customer_spend'")).fetchall()}
    if not columns:
        return Spend(customer_id=customer_id, totals=[], as_of=now)
    built_at = next((column for column in _BUILD_TIME_COLUMNS if column in columns), None)
    try:
        rows = await (await conn.execute(
            """select currency::text, total_spend, purchase_count, first_purchase_at, last_purchase_at
               from marts.customer_spend where customer_id = %s order by currency""", (customer_id,))).fetchall()
        as_of = None
        if built_at:
            as_of = (await (await conn.execute(f"select max({built_at}) from marts.customer_spend")).fetchone())[0]
    except (psycopg.errors.UndefinedTable, psycopg.errors.UndefinedColumn):  # dbt is swapping it right now
        return Spend(customer_id=customer_id, totals=[], as_of=now)
    if not isinstance(as_of, datetime):
        as_of = now
    elif as_of.tzinfo is None:  # a `timestamp` column: dbt writes UTC
        as_of = as_of.replace(tzinfo=timezone.utc)
    totals = [SpendTotal(currency=r[0], total_spend=r[1], purchase_count=r[2], first_purchase_at=r[3],
                         last_purchase_at=r[4]) for r in rows]
    return Spend(customer_id=customer_id, totals=totals, as_of=as_of)
