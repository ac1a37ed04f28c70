"""Re-drive rejected records after a fix (a customer created late, a contract change), without duplicates.

Each chosen row of `staging.purchase_events_rejected` that has not been replayed yet is validated again,
from its raw bytes, by the same rules as the loader. In one transaction: the events that pass now are
inserted into `staging.purchase_events` (an event_id already there is ignored, so a replay never doubles
anything) and their rejected rows get `replayed_at`; records that still fail stay as they are.

    python -m purchases.replay --reason-contains "unknown customer" --dry-run
    python -m purchases.replay --reason-contains "unknown customer"

or trigger the `purchases_replay` DAG with the same parameters (README.md, "Loading").
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
from purchases.loader import _insert_events, _known_customers, _storable_extra, row_from_event, validate

log = logging.getLogger(__name__)


@dataclass
class ReplayResult:
    examined: int = 0
    loaded: int = 0
    already_loaded: int = 0
    still_rejected: int = 0
    still_rejected_reasons: dict[str, int] = field(default_factory=dict)
    replayed_at: str | None = None
    dry_run: bool = False

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def replay(dsn: str, reason_contains: str | None = None, rejection_ids: list[int] | None = None,
           topic: str | None = None, dry_run: bool = False, limit: int = 100_000) -> ReplayResult:
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
            (*params, limit)).fetchall()
        result.examined = len(rows)
        now: datetime = conn.execute("select now()").fetchone()[0]
        result.replayed_at = now.isoformat()
        passing, reasons = [], Counter()
        for rejection_id, raw, topic_name, partition, offset in rows:
            try:
                event = validate(bytes(raw) if raw is not None else None, utcnow())
                passing.append((rejection_id, event, _storable_extra(event), topic_name, partition, offset))
            except InvalidEvent as exc:
                reasons[exc.reason.split(":")[0]] += 1
        known = _known_customers(conn, (str(p[1].customer_id) for p in passing))
        for item in [p for p in passing if str(p[1].customer_id) not in known]:
            passing.remove(item)
            reasons["customer_id: unknown customer"] += 1
        result.still_rejected = sum(reasons.values())
        result.still_rejected_reasons = dict(reasons)
        if passing:
            staging_rows = [row_from_event(e, extra, t, p, o) for _, e, extra, t, p, o in passing]
            offered, result.loaded = _insert_events(conn, [staging_rows])
            result.already_loaded = offered - result.loaded
            conn.execute("update staging.purchase_events_rejected set replayed_at = %s where rejection_id = any(%s)",
                         (now, [p[0] for p in passing]))
        if dry_run:
            conn.rollback()
        else:
            conn.commit()
    log.info("replay%s: %s", " (dry run, nothing changed)" if dry_run else "", json.dumps(result.as_dict()))
    return result


def main(argv: list[str] | None = None) -> None:
    from purchases.settings import get_settings

    parser = argparse.ArgumentParser(prog="python -m purchases.replay", description=__doc__.split("\n\n")[0])
    parser.add_argument("--dsn", default=get_settings().warehouse_dsn)
    parser.add_argument("--reason-contains", help="only rejections whose reason contains this text")
    parser.add_argument("--rejection-id", type=int, action="append", dest="rejection_ids",
                        help="only this rejection_id (repeatable)")
    parser.add_argument("--topic", help="only records from this topic")
    parser.add_argument("--dry-run", action="store_true", help="report what would be replayed, change nothing")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    result = replay(args.dsn, args.reason_contains, args.rejection_ids, args.topic, args.dry_run)
    print(json.dumps(result.as_dict(), indent=2))


if __name__ == "__main__":
    main()
