"""One writer per partition, and no gap between loader runs: the partition is handed over, not left idle.

Each loader run of a partition (an Airflow `load` task, the drain of `make down`, a test's or the CLI's
loader) first takes the partition's writer lock, a session-level Postgres advisory lock on the loader's
batch connection, and holds it until it ends. A new loader run does not wait for the previous one to finish
its window: it asks for the lock, and the holder, which checks between two batches whether anyone waits for
it (its own `pg_locks` entry, a few microseconds), commits the batch in hand and ends, handing the partition
over. The successor has its consumer ready and starts loading within the time of one batch (at most
LoaderConfig.batch_max_seconds), so a purchase waits for a loader at no moment, while still only one
process writes a partition's batches at a time.

The lock dies with the session: a loader killed by SIGKILL or on a vanished machine frees the partition as
soon as Postgres notices its connection is gone. A successor that is not handed the partition within
`LoaderConfig.takeover_wait_seconds` fails (naming the holder), and Airflow retries it. Exactly once does
not rest on this lock: each batch still locks its offset row and checks that it starts where the stored
offset says (staging.write_batch), so even two writers would each store only what the other had not.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import psycopg

from purchases.load.kafka import LoaderError

# The advisory lock's first key: the topic, in a namespace of its own (no other lock of the warehouse uses a
# two-key advisory lock with these keys); the second key is the partition.
_NAMESPACE = "purchases.load writer"


class PartitionBusy(LoaderError):
    """Another loader held the partition and did not hand it over in time."""


def _topic_key(topic: str) -> int:
    """A stable int4 for the topic; positive, so that it reads the same as pg_locks' `classid` (an oid)."""
    return zlib.crc32(f"{_NAMESPACE}:{topic}".encode()) & 0x7FFF_FFFF


@dataclass
class PartitionWriter:
    """The writer lock of one partition, on the loader's batch connection (autocommit)."""

    conn: psycopg.Connection
    topic: str
    partition: int

    @property
    def _keys(self) -> dict[str, int]:
        return {"topic": _topic_key(self.topic), "partition": self.partition}

    def take(self, wait_seconds: float) -> None:
        """Blocks until the partition is ours: its previous writer hands it over after its current batch."""
        try:
            with self.conn.transaction():  # `set local`: the timeout is for this wait only
                self.conn.execute("select set_config('lock_timeout', %s, true)", (f"{int(wait_seconds * 1000)}ms",))
                self.conn.execute("select pg_advisory_lock(%(topic)s, %(partition)s)", self._keys)
        except psycopg.errors.LockNotAvailable:
            holder = self.holder()
            raise PartitionBusy(
                f"{self.topic}[{self.partition}] was not handed over within {wait_seconds:.0f} s: another "
                f"loader holds it (Postgres backend pid {holder}; pg_stat_activity tells which). The task is "
                f"retried."
            ) from None

    def successor_waits(self) -> bool:
        """Whether another loader waits for this partition: then this one ends after the batch in hand."""
        return self.conn.execute(
            "select exists (select from pg_locks where locktype = 'advisory' and not granted "
            "and database = (select oid from pg_database where datname = current_database()) "
            "and classid = %(topic)s and objid = %(partition)s and objsubid = 2)",
            self._keys,
        ).fetchone()[0]

    def holder(self) -> int | None:
        """The backend pid holding the partition, if any."""
        row = self.conn.execute(
            "select pid from pg_locks where locktype = 'advisory' and granted "
            "and database = (select oid from pg_database where datname = current_database()) "
            "and classid = %(topic)s and objid = %(partition)s and objsubid = 2",
            self._keys,
        ).fetchone()
        return row[0] if row else None

    def release(self) -> None:
        """Hands the partition over now (closing the connection does the same)."""
        self.conn.execute("select pg_advisory_unlock(%(topic)s, %(partition)s)", self._keys)
