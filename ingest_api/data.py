"""Every SQL statement the API runs, one named function each; the routes call these and hold no SQL.

What it reads and writes: app.customers (the accounts), app.login_failures (wrong passwords per username,
shared by every worker), staging.purchase_events and
staging.purchase_events_rejected (written by the loader), marts.customer_spend (built by dbt; its columns
are fixed by the model's enforced contract). Rows come back as dicts keyed by column name, which
the routes turn into the answers of schemas.py. The connections are in autocommit mode (core/db.py).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import psycopg
from psycopg import AsyncConnection
from psycopg.rows import dict_row


async def _one(conn: AsyncConnection, query: str, params: tuple | dict) -> dict | None:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(query, params)
        return await cur.fetchone()


async def _all(conn: AsyncConnection, query: str, params: tuple | dict) -> list[dict]:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(query, params)
        return await cur.fetchall()


async def ping(conn: AsyncConnection) -> None:
    """The cheapest round trip: /readyz's database check."""
    await conn.execute("select 1")


# customers -------------------------------------------------------------------------------------------

_CUSTOMER = "select customer_id, username, password_hash from app.customers"


async def username_taken(conn: AsyncConnection, username: str) -> bool:
    cur = await conn.execute("select 1 from app.customers where username = %s", (username,))
    return await cur.fetchone() is not None


async def insert_customer(conn: AsyncConnection, customer_id: uuid.UUID, username: str, password_hash: str) -> None:
    """Raises psycopg.errors.UniqueViolation if the username was taken meanwhile."""
    await conn.execute(
        "insert into app.customers (customer_id, username, password_hash) values (%s, %s, %s)",
        (customer_id, username, password_hash),
    )


async def customer_by_username(conn: AsyncConnection, username: str) -> dict | None:
    """customer_id, username, password_hash; None if there is no such account."""
    return await _one(conn, f"{_CUSTOMER} where username = %s", (username,))


async def customer_by_id(conn: AsyncConnection, customer_id: uuid.UUID) -> dict | None:
    """customer_id, username, password_hash; None if there is no such account."""
    return await _one(conn, f"{_CUSTOMER} where customer_id = %s", (customer_id,))


async def update_password_hash(
    conn: AsyncConnection, customer_id: uuid.UUID, password_hash: str, changed_at: datetime
) -> None:
    """`changed_at` is the API's clock, as the tokens' `iat` is: those issued before it stop working."""
    await conn.execute(
        """update app.customers set password_hash = %s, password_changed_at = %s, updated_at = now()
           where customer_id = %s""",
        (password_hash, changed_at, customer_id),
    )


async def mark_password_changed(conn: AsyncConnection, customer_id: uuid.UUID, changed_at: datetime) -> None:
    await conn.execute(
        "update app.customers set password_changed_at = %s where customer_id = %s", (changed_at, customer_id)
    )


async def password_changes_since(conn: AsyncConnection, since: datetime) -> list[tuple[uuid.UUID, datetime]]:
    """(customer_id, password_changed_at) of the passwords changed after `since`: a range scan of the partial
    index on password_changed_at, run by every worker every few seconds."""
    cur = await conn.execute(
        "select customer_id, password_changed_at from app.customers where password_changed_at > %s", (since,)
    )
    return await cur.fetchall()


# wrong passwords per username (app.login_failures), for every worker alike ---------------------------------
# A row holds the failures within the window, oldest first, never more than the limit: an attempt is added
# only while fewer are recent, and a locked username's attempts are refused without being added.

_COUNT_ATTEMPT = """
insert into app.login_failures as f (username, failed_at, last_failed_at)
values (%(username)s, array[statement_timestamp()], statement_timestamp())
on conflict (username) do update
    set failed_at = array(
            select t from unnest(f.failed_at) as t where t > statement_timestamp() - %(window)s order by t
        ) || statement_timestamp(),
        last_failed_at = statement_timestamp()
    where (select count(*) from unnest(f.failed_at) as t where t > statement_timestamp() - %(window)s) < %(max)s::int
returning true
"""


async def count_login_attempt(conn: AsyncConnection, username: str, max_failures: int, window: timedelta) -> bool:
    """Counts an attempt on `username` as a failure, before its password is checked; False (and not counted)
    if `max_failures` are already recent. One statement: the upsert locks the username's row, so concurrent
    attempts are counted one after the other and at most `max_failures` per window get through."""
    cur = await conn.execute(_COUNT_ATTEMPT, {"username": username, "window": window, "max": max_failures})
    return await cur.fetchone() is not None


async def login_retry_after(conn: AsyncConnection, username: str, max_failures: int, window: timedelta) -> float | None:
    """Seconds until `username` has fewer than `max_failures` recent failures; None if it has already."""
    cur = await conn.execute(
        """select extract(epoch from (array_agg(t order by t))[(count(*) - %(max)s::int + 1)::int]
                                     + %(window)s - statement_timestamp())::float8
           from app.login_failures, unnest(failed_at) as t
           where username = %(username)s and t > statement_timestamp() - %(window)s""",
        {"username": username, "window": window, "max": max_failures},
    )
    row = await cur.fetchone()
    return row[0] if row else None


async def clear_login_failures(conn: AsyncConnection, username: str) -> None:
    """A right password clears the username's earlier mistakes."""
    await conn.execute("delete from app.login_failures where username = %s", (username,))


async def prune_login_failures(conn: AsyncConnection, window: timedelta) -> int:
    """Forgets the usernames whose newest failure has left the window. Returns how many."""
    cur = await conn.execute(
        "delete from app.login_failures where last_failed_at <= statement_timestamp() - %s", (window,)
    )
    return cur.rowcount


# purchases: a customer's, newest first, in keyset pages ------------------------------------------------

# The columns of schemas.RecordedPurchase.
_RECORDED = """select event_id, product_name, description, quantity, unit_price, currency::text as currency,
                      quantity * unit_price as total_price, purchased_at, loaded_at as recorded_at
               from staging.purchase_events"""
_NEWEST_FIRST = "order by purchased_at desc, event_id desc limit %s"


async def first_page(conn: AsyncConnection, customer_id: uuid.UUID, limit: int) -> list[dict]:
    return await _all(conn, f"{_RECORDED} where customer_id = %s {_NEWEST_FIRST}", (customer_id, limit))


async def next_page(
    conn: AsyncConnection, customer_id: uuid.UUID, after: tuple[datetime, uuid.UUID], limit: int
) -> list[dict]:
    """The purchases listed after `after`, the (purchased_at, event_id) of the last one shown."""
    return await _all(
        conn,
        f"{_RECORDED} where customer_id = %s and (purchased_at, event_id) < (%s, %s) {_NEWEST_FIRST}",
        (customer_id, *after, limit),
    )


async def recorded_purchase(conn: AsyncConnection, event_id: uuid.UUID, customer_id: uuid.UUID) -> dict | None:
    return await _one(conn, f"{_RECORDED} where event_id = %s and customer_id = %s", (event_id, customer_id))


async def rejected_purchase(conn: AsyncConnection, event_id: uuid.UUID, customer_id: uuid.UUID) -> dict | None:
    """event_id, reason, rejected_at of the latest rejection: each record of an event (a retry sends another) is
    rejected on its own."""
    return await _one(
        conn,
        """select event_id, reason, rejected_at from staging.purchase_events_rejected
                               where event_id = %s and customer_id = %s order by rejected_at desc limit 1""",
        (event_id, customer_id),
    )


async def idempotency_conflicts(conn: AsyncConnection, event_id: uuid.UUID, customer_id: uuid.UUID) -> list[dict]:
    """reason, rejected_at of the records of this event the loader rejected as idempotency conflicts (the same
    Idempotency-Key, another body), oldest first, at most 100."""
    return await _all(
        conn,
        """select reason, rejected_at from staging.purchase_events_rejected
            where event_id = %s and customer_id = %s and reason like 'idempotency conflict:%%'
            order by rejected_at, rejection_id limit 100""",
        (event_id, customer_id),
    )


# spend: dbt's mart plus what it has not counted yet ---------------------------------------------------
# The customer's spend is marts.customer_spend plus the customer's recorded purchases that mart has not
# counted, found exactly (by batch, never by a time window) and cheaply (the few batches since dbt's last
# run, never the customer's history). Why it is exact (docs/api.md has the long form):
# * the gate stamps the batches it passes under one lock (purchases/check/batches.py), so a later stamp
#   (loaded_batches.checked_at, the marts' passed_at) means a later commit;
# * customer_purchases takes, at each run, every passed batch it sees, whole: a prefix of the batches in
#   stamp order; its rows' transformed_at comes after the model's lock, later than any earlier run's;
# * customer_spend adds up, at each run, the customer_purchases rows transformed after its watermark
#   (max(last_transformed_at)).
# So the mart has counted exactly the batches stamped up to `counted_through` (the newest stamp among the
# customer_purchases rows at or below the watermark), and every other recorded purchase (its batch not
# passed yet, failed, or passed since) is added from staging through the (batch_id, customer_id) index.
# Two statements in one repeatable-read snapshot, so that the second is planned with counted_through's
# value: as a subquery of one statement, Postgres guessed a third of all batches and scanned them (80 ms for
# a customer with 20,000 purchases in 1,000,000, against under 1 ms).

_MART_STATE = """
    select watermark.transformed_through as as_of,
           (select max(p.passed_at) from marts.customer_purchases as p
            where p.transformed_at <= watermark.transformed_through) as counted_through
    from (select max(last_transformed_at) as transformed_through from marts.customer_spend) as watermark
"""
_UNCOUNTED = """
    uncounted as (
        select e.currency::text as currency, sum(e.quantity * e.unit_price) as spend, count(*) as purchases,
               min(e.purchased_at) as first_purchase_at, max(e.purchased_at) as last_purchase_at
        from staging.purchase_events as e
        where e.customer_id = %(customer)s {in_uncounted_batches}
        group by e.currency
    )
"""
_IN_UNCOUNTED_BATCHES = """
          and e.batch_id in (
              select batch_id from staging.loaded_batches where checked_at is null
              union all
              select batch_id from staging.loaded_batches where checked_at > %(counted_through)s)
"""
_SPEND = f"""
    with {_UNCOUNTED.format(in_uncounted_batches=_IN_UNCOUNTED_BATCHES)},
    counted as (
        select currency::text as currency, total_spend, purchase_count, first_purchase_at, last_purchase_at
        from marts.customer_spend where customer_id = %(customer)s
    )
    select currency,
           coalesce(counted.total_spend, 0) + coalesce(uncounted.spend, 0) as total_spend,
           coalesce(counted.purchase_count, 0) + coalesce(uncounted.purchases, 0) as purchase_count,
           least(counted.first_purchase_at, uncounted.first_purchase_at) as first_purchase_at,
           greatest(counted.last_purchase_at, uncounted.last_purchase_at) as last_purchase_at,
           coalesce(uncounted.purchases, 0) as not_yet_in_marts
    from counted full join uncounted using (currency)
    order by currency
"""
# Nothing counted by the marts: every recorded purchase is uncounted. Before dbt first built them; and while
# `dbt build --full-refresh` has rebuilt customer_purchases (every row transformed anew, none at or below
# the watermark) but not yet customer_spend, whose totals would now count twice.
_SPEND_FROM_STAGING = f"""
    with {_UNCOUNTED.format(in_uncounted_batches="")}
    select currency, spend as total_spend, purchases as purchase_count, first_purchase_at, last_purchase_at,
           purchases as not_yet_in_marts
    from uncounted
    order by currency
"""


@dataclass(frozen=True)
class SpendReading:
    """The columns of schemas.SpendTotal, one row per currency, and the marts' watermark (None: empty)."""

    totals: list[dict]
    as_of: datetime | None


async def spend(conn: AsyncConnection, customer_id: uuid.UUID) -> SpendReading:
    """Every purchase the customer's list shows, counted once: the marts' totals plus what they have not
    counted yet (staging alone until dbt first built the marts)."""
    try:
        async with conn.transaction():
            await conn.execute("set transaction isolation level repeatable read, read only")
            state = await _one(conn, _MART_STATE, {})
            as_of = state["as_of"]
            if as_of is not None and as_of.tzinfo is None:  # a `timestamp` column: dbt writes UTC
                as_of = as_of.replace(tzinfo=UTC)
            if state["counted_through"] is None:
                return SpendReading(await _all(conn, _SPEND_FROM_STAGING, {"customer": customer_id}), as_of)
            params = {"customer": customer_id, "counted_through": state["counted_through"]}
            return SpendReading(await _all(conn, _SPEND, params), as_of)
    except psycopg.errors.UndefinedTable:  # dbt has not built the marts yet
        return SpendReading(await _all(conn, _SPEND_FROM_STAGING, {"customer": customer_id}), None)
