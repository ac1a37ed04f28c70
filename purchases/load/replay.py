"""Re-drive rejected records after a fix (a customer created late, a contract change), without duplicates.

Each chosen row of `staging.purchase_events_rejected` that has not been replayed yet is checked again, from its
raw bytes, by the same rules as the loader. In one transaction: the events that pass now are stored in
`staging.purchase_events` as a batch of their own (kind 'replay', so the quality gate checks them before the
marts read them; an event_id already there is ignored, so a replay never doubles anything) and their
rejected rows get `replayed_at`; records that still fail stay as they are.

    python -m purchases.load.replay --reason-contains "unknown customer" --dry-run
    python -m purchases.load.replay --reason-contains "unknown customer"

or trigger the `purchases_replay` DAG with the same parameters (docs/loading.md).
"""

from __future__ import annotations

import argparse
import json
import logging
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

import psycopg

from purchases.contract import InvalidEvent, utcnow
from purchases.load.records import LineTail, event_row
from purchases.load.staging import (
    StoreOutcome,
    known_customers,
    new_batch_id,
    record_batch,
    store_events,
    unknown_customer_reason,
)

log = logging.getLogger(__name__)


@dataclass
class ReplayResult:
    examined: int = 0
    loaded: int = 0
    already_loaded: int = 0
    still_rejected: int = 0
    still_rejected_reasons: dict[str, int] = field(default_factory=dict)
    replayed_at: str | None = None
    batch_id: int | None = None
    dry_run: bool = False

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _reason_kind(reason: str) -> str:
    return reason.split(":")[0]


def replay(
    dsn: str,
    reason_contains: str | None = None,
    rejection_ids: list[int] | None = None,
    topic: str | None = None,
    dry_run: bool = False,
    limit: int = 100_000,
) -> ReplayResult:
    """Replay the not-yet-replayed rejected records matching every given filter (all of them if none)."""
    where, params = ["replayed_at is null"], []
    if reason_contains:
        where.append("position(lower(%s) in lower(reason)) > 0")
        params.append(reason_contains)
    if rejection_ids:
        where.append("rejection_id = any(%s)")
        params.append(list(rejection_ids))
    if topic:
        where.append("kafka_topic = %s")
        params.append(topic)
    result = ReplayResult(dry_run=dry_run)
    with psycopg.connect(dsn, application_name="purchases-replay") as conn:
        # skip locked: a replay running at the same time takes other rows, never the same ones twice.
        rows = conn.execute(
            f"select rejection_id, raw_value, kafka_topic, kafka_partition, kafka_offset "
            f"from staging.purchase_events_rejected where {' and '.join(where)} "
            f"order by kafka_topic, kafka_partition, kafka_offset limit %s for update skip locked",
            (*params, limit),
        ).fetchall()
        result.examined = len(rows)
        now: datetime = conn.execute("select now()").fetchone()[0]
        result.replayed_at = now.isoformat()
        result.batch_id = new_batch_id(conn)
        checked_at = utcnow()
        passing, reasons = [], Counter()
        for rejection_id, raw, topic_name, partition, offset in rows:
            try:
                row = event_row(
                    bytes(raw) if raw is not None else None,
                    checked_at,
                    LineTail(topic_name, partition, result.batch_id),
                    offset,
                )
                passing.append((rejection_id, row))
            except InvalidEvent as exc:
                reasons[_reason_kind(exc.reason)] += 1
            except Exception as exc:  # noqa: BLE001 - as in the loader: one record never stops the rest
                reasons[f"could not be read: {type(exc).__name__}"] += 1
        known = known_customers(conn, (row.customer_id for _, row in passing))
        for item in [p for p in passing if p[1].customer_id not in known]:
            passing.remove(item)
            reasons[_reason_kind(unknown_customer_reason(item[1].customer_id))] += 1
        outcome = store_events(conn, [[row for _, row in passing]]) if passing else StoreOutcome()
        refused = {id(row) for row, _ in outcome.refused}
        for _row, reason in outcome.refused:
            reasons[_reason_kind(reason)] += 1
        replayed = [rejection_id for rejection_id, row in passing if id(row) not in refused]
        result.loaded, result.already_loaded = outcome.loaded, outcome.duplicates
        result.still_rejected = sum(reasons.values())
        result.still_rejected_reasons = dict(reasons)
        if replayed:
            record_batch(conn, result.batch_id, "replay", topic or rows[0][2], None, None, None, outcome, 0)
            conn.execute(
                "update staging.purchase_events_rejected set replayed_at = %s where rejection_id = any(%s)",
                (now, replayed),
            )
        if dry_run:
            conn.rollback()
        else:
            conn.commit()
    log.info("replay%s: %s", " (dry run, nothing changed)" if dry_run else "", json.dumps(result.as_dict()))
    return result


def main(argv: list[str] | None = None) -> None:
    from purchases.settings import get_settings

    parser = argparse.ArgumentParser(prog="python -m purchases.load.replay", description=__doc__.split("\n\n")[0])
    parser.add_argument("--dsn", default=get_settings().dsn_as("loader"))
    parser.add_argument("--reason-contains", help="only rejections whose reason contains this text")
    parser.add_argument(
        "--rejection-id", type=int, action="append", dest="rejection_ids", help="only this rejection_id (repeatable)"
    )
    parser.add_argument("--topic", help="only records from this topic")
    parser.add_argument("--dry-run", action="store_true", help="report what would be replayed, change nothing")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    result = replay(args.dsn, args.reason_contains, args.rejection_ids, args.topic, args.dry_run)
    print(json.dumps(result.as_dict(), indent=2))


if __name__ == "__main__":
    main()
