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


# Taken by every gate run while it stamps, until its commit.
STAMP_LOCK = "purchases.check: stamping passed batches"


def mark_passed(conn: psycopg.Connection, increment: Increment) -> None:
    """Stamp the batches passed.

    The stamps follow the commits: each gate run stamps under one transaction-scoped lock, with
    clock_timestamp() taken after the lock, so a gate run that commits later stamps later, even when two
    gate runs overlap (a DAG run and `make down`'s drain). The marts pick passed rows by this stamp, and
    the API's spend relies on it (ingest_api/data.py): every batch stamped before the newest one a dbt run
    saw was committed before that run started, so the run saw it too.
    """
    with conn.transaction():  # the lock lasts until the stamps are committed
        conn.execute("select pg_advisory_xact_lock(hashtext(%s))", (STAMP_LOCK,))
        conn.execute(
            "update staging.loaded_batches set checked_at = clock_timestamp() "
            "where batch_id = any(%s) and checked_at is null",
            (increment.batch_ids,),
        )
