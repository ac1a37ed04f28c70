"""The gate's to-do list: batches in `staging.loaded_batches` whose rows the gate has not passed yet.

A batch row is committed in the same transaction as the batch's events, so every committed batch is here,
whether or not the loader task that wrote it went on to succeed (its rows are never lost to the gate), and
replays get batches of their own. The gate takes what is unchecked, oldest first, checks exactly those rows
and, if they pass, stamps the batches `checked_at`: from then on the marts read them.
"""

from __future__ import annotations

from dataclasses import dataclass

import psycopg
from psycopg import sql

# At most this many batches (about a second of loading each under load) are checked in one gate run; the
# rest wait for the next run, so one run's cost stays bounded after a long outage of the gate.
MAX_BATCHES_PER_RUN = 2_000


@dataclass(frozen=True)
class Increment:
    """The batches one gate run checks, and how many event rows they hold."""

    batch_ids: list[int]
    rows: int

    def query(self) -> sql.Composed:
        """Exactly these batches' rows of staging.purchase_events (batch_id is indexed)."""
        return sql.SQL("select * from staging.purchase_events where batch_id = any({}::bigint[])").format(
            sql.Literal(self.batch_ids)
        )


def unchecked(conn: psycopg.Connection, limit: int = MAX_BATCHES_PER_RUN) -> Increment:
    rows = conn.execute(
        "select batch_id, loaded from staging.loaded_batches where checked_at is null order by batch_id limit %s",
        (limit,),
    ).fetchall()
    return Increment([batch_id for batch_id, _ in rows], sum(loaded for _, loaded in rows))


def any_unchecked(conn: psycopg.Connection) -> bool:
    return conn.execute("select exists (select from staging.loaded_batches where checked_at is null)").fetchone()[0]


def mark_passed(conn: psycopg.Connection, increment: Increment) -> None:
    # clock_timestamp, not the transaction's start: the marts pick passed rows by this time, and a later
    # stamp than any a run of the marts has already seen keeps that pick complete.
    conn.execute(
        "update staging.loaded_batches set checked_at = clock_timestamp() "
        "where batch_id = any(%s) and checked_at is null",
        (increment.batch_ids,),
    )
