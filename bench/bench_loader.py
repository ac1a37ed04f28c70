"""Loader throughput: events/s from the broker to committed staging rows, against raw COPY.

Everything runs on its own: an embedded broker on a free port, a scratch warehouse database (dropped at the
end). Steps, all in one run:

1. Produce N valid events (default 1,000,000; BENCH_LOADER_EVENTS to change) to a 3-partition topic.
2. Loader: one `python -m purchases.load load --until-idle` process per partition, in parallel, as the
   mapped Airflow tasks run them. events/s = rows committed / wall time from launch to the last exit
   (process start-up included). Peak RSS = the largest loader process.
3. Baseline, the physical limit: the same rows, already encoded (binary COPY format, taken back out of
   staging), COPYed by one connection into an identical table (same indexes) and committed; best of 2.
4. The seed system's way, for reference: parse, look up the customer, INSERT and COMMIT per event, on a
   sample (BENCH_LOADER_PER_ROW_SAMPLE, default 5,000), rate extrapolated.

Figure: loader_events_per_s {value, baseline: raw COPY rows/s, ratio}; goal ratio >= 0.5.
"""

from __future__ import annotations

import os
import resource
import secrets
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
from confluent_kafka import Consumer, Producer, TopicPartition
from psycopg.conninfo import make_conninfo

from bench.results import record
from purchases.broker import ensure_topic, start_embedded_broker
from purchases.contract import parse_event
from purchases.load import LoaderConfig
from purchases.load.records import STAGING_COLUMNS
from purchases.processes import free_port, stop_process
from purchases.roles import setup_warehouse
from purchases.settings import get_settings
from purchases.warehouse import drop_database

ROOT = Path(__file__).resolve().parents[1]
EVENTS = int(os.environ.get("BENCH_LOADER_EVENTS", "1000000"))
PER_ROW_SAMPLE = int(os.environ.get("BENCH_LOADER_PER_ROW_SAMPLE", "5000"))
BATCH_MAX_EVENTS = int(os.environ.get("BENCH_LOADER_BATCH_MAX_EVENTS", str(LoaderConfig.batch_max_events)))
PARTITIONS = 3
# As the mapped tasks run: all partitions at once (LocalExecutor parallelism). 1 = one after the other.
PARALLEL = int(os.environ.get("BENCH_LOADER_PARALLEL", str(PARTITIONS)))
CUSTOMERS = 1000
TOPIC = "purchases"


def event_bytes(n: int, customer: uuid.UUID, now: datetime) -> bytes:
    # The exact JSON PurchaseEvent.to_bytes() writes, formatted directly: producing 1M events stays fast.
    purchased_at = (now - timedelta(milliseconds=n)).isoformat().replace("+00:00", "Z")
    return (
        f'{{"schema_version":1,"event_id":"{uuid.uuid4()}","customer_id":"{customer}",'
        f'"product_name":"Item {n % 5000}","description":"size {n % 7}","quantity":{1 + n % 5},'
        f'"unit_price":"{1 + n % 300}.{n % 100:02d}","currency":"EUR","purchased_at":"{purchased_at}"}}'
    ).encode()


def produce(bootstrap_servers: str, customers: list[uuid.UUID]) -> float:
    producer = Producer(
        {
            "bootstrap.servers": bootstrap_servers,
            "linger.ms": 20,
            "batch.num.messages": 10000,
            "queue.buffering.max.messages": 200000,
            "acks": "all",
            "enable.idempotence": False,
        }
    )
    failures = []
    now = datetime.now(UTC)
    started = time.monotonic()
    for n in range(EVENTS):
        customer = customers[n % len(customers)]
        while True:
            try:
                producer.produce(
                    TOPIC,
                    key=str(customer).encode(),
                    value=event_bytes(n, customer, now),
                    partition=hash(customer) % PARTITIONS,
                    on_delivery=lambda err, _m: err and failures.append(err),
                )
                break
            except BufferError:
                producer.poll(0.05)
        if n % 1000 == 0:
            producer.poll(0)
    assert producer.flush(120) == 0 and not failures, failures[:3]
    return time.monotonic() - started


def run_loaders(bootstrap_servers: str, dsn: str, parallel: int) -> tuple[float, float, list[str]]:
    """One loader process per partition, `parallel` at a time; wall time from the first launch to the last exit."""

    def launch(partition: int) -> subprocess.Popen:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "purchases.load",
                "--bootstrap-servers",
                bootstrap_servers,
                "--dsn",
                dsn,
                "--topic",
                TOPIC,
                "load",
                "--partition",
                str(partition),
                "--window",
                "3600",
                "--until-idle",
                "--batch-max-events",
                str(BATCH_MAX_EVENTS),
            ],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )

    started = time.monotonic()
    processes, outputs = [], []
    for first in range(0, PARTITIONS, parallel):
        group = [launch(p) for p in range(first, min(first + parallel, PARTITIONS))]
        outputs.extend(p.communicate()[0].decode().strip() for p in group)
        processes.extend(group)
    elapsed = time.monotonic() - started
    assert all(p.returncode == 0 for p in processes), outputs
    peak_rss_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return elapsed, peak_rss_mb, outputs


def raw_copy_baseline(dsn: str, tries: int = 2) -> list[float]:
    """rows/s of each try (a fresh identical table each time): the machine is shared, so the best try is
    taken as the limit, which only makes the loader's ratio stricter."""
    columns = ", ".join(STAGING_COLUMNS)
    rates = []
    with psycopg.connect(dsn) as conn:
        chunks = []
        with conn.cursor().copy(
            f"copy (select {columns} from staging.purchase_events) to stdout (format binary)"
        ) as copy:
            for chunk in copy:
                chunks.append(bytes(chunk))
        for _ in range(tries):
            conn.execute("drop table if exists staging.purchase_events_copy_baseline")
            conn.execute(
                "create table staging.purchase_events_copy_baseline (like staging.purchase_events including all)"
            )
            conn.commit()
            started = time.monotonic()
            with conn.cursor().copy(
                f"copy staging.purchase_events_copy_baseline ({columns}) from stdin (format binary)"
            ) as copy:
                for chunk in chunks:
                    copy.write(chunk)
            conn.commit()
            elapsed = time.monotonic() - started
            rows = conn.execute("select count(*) from staging.purchase_events_copy_baseline").fetchone()[0]
            rates.append(rows / elapsed)
    return rates


def per_row_insert(bootstrap_servers: str, dsn: str) -> float:
    """The seed system: one event at a time, customer looked up, INSERT, COMMIT."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap_servers,
            "group.id": "bench-unused",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
        }
    )
    consumer.assign([TopicPartition(TOPIC, 0, 0)])
    messages = []
    while len(messages) < PER_ROW_SAMPLE:
        messages.extend(m for m in consumer.consume(1000, 1.0) if m.error() is None)
    consumer.close()
    messages = messages[:PER_ROW_SAMPLE]
    columns = ", ".join(STAGING_COLUMNS)
    with psycopg.connect(dsn) as conn:
        conn.execute("create table staging.purchase_events_per_row (like staging.purchase_events including all)")
        conn.commit()
        started = time.monotonic()
        for message in messages:
            event = parse_event(message.value())
            if conn.execute("select 1 from app.customers where customer_id = %s", (event.customer_id,)).fetchone():
                conn.execute(
                    f"insert into staging.purchase_events_per_row ({columns}) values "
                    f"(%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) on conflict do nothing",
                    (
                        event.event_id,
                        event.customer_id,
                        event.product_name,
                        event.description,
                        event.quantity,
                        event.unit_price,
                        event.currency,
                        event.purchased_at,
                        event.schema_version,
                        "{}",
                        TOPIC,
                        message.partition(),
                        message.offset(),
                    ),
                )
            conn.commit()
        elapsed = time.monotonic() - started
    return len(messages) / elapsed


def main() -> None:
    dsn = make_conninfo(get_settings().warehouse_dsn, dbname=f"purchases_bench_{secrets.token_hex(3)}")
    port = free_port()
    log_path = Path(tempfile.gettempdir()) / f"bench_loader_broker_{port}.log"
    broker = start_embedded_broker("127.0.0.1", port, log_path)
    bootstrap_servers = f"127.0.0.1:{port}"
    try:
        setup_warehouse(dsn)
        deadline = time.monotonic() + 30
        while True:
            try:
                ensure_topic(bootstrap_servers, TOPIC, PARTITIONS, timeout=5)
                break
            except Exception:  # noqa: BLE001 - the broker may still be starting
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
        customers = [uuid.uuid4() for _ in range(CUSTOMERS)]
        with psycopg.connect(dsn) as conn:
            conn.cursor().executemany(
                "insert into app.customers (customer_id, username, password_hash) values (%s, %s, 'x')",
                [(c, f"bench-{c}") for c in customers],
            )

        produce_seconds = produce(bootstrap_servers, customers)
        print(f"produced {EVENTS:,} events in {produce_seconds:.1f} s ({EVENTS / produce_seconds:,.0f}/s)")

        load_seconds, peak_rss_mb, outputs = run_loaders(bootstrap_servers, dsn, PARALLEL)
        with psycopg.connect(dsn) as conn:
            loaded = conn.execute("select count(*) from staging.purchase_events").fetchone()[0]
            rejected = conn.execute("select count(*) from staging.purchase_events_rejected").fetchone()[0]
        assert (loaded, rejected) == (EVENTS, 0), (loaded, rejected, outputs)
        loader_rate = loaded / load_seconds
        print(
            f"loader: {loaded:,} rows in {load_seconds:.1f} s = {loader_rate:,.0f} events/s, "
            f"peak RSS {peak_rss_mb:.0f} MB per process"
        )

        baseline_tries = raw_copy_baseline(dsn)
        baseline = max(baseline_tries)
        print(f"raw COPY baseline: {baseline:,.0f} rows/s (best of {[round(r) for r in baseline_tries]})")
        per_row = per_row_insert(bootstrap_servers, dsn)
        print(f"per-row INSERT+COMMIT: {per_row:,.0f} events/s (sample of {PER_ROW_SAMPLE:,})")

        record(
            "loader_events_per_s",
            round(loader_rate),
            "events/s",
            round(baseline),
            insert_per_row_events_per_s=round(per_row),
            insert_per_row_sample=PER_ROW_SAMPLE,
            peak_rss_mb=round(peak_rss_mb, 1),
            events=EVENTS,
            partitions=PARTITIONS,
            loader_processes_at_once=PARALLEL,
            batch_max_events=BATCH_MAX_EVENTS,
            load_seconds=round(load_seconds, 2),
            produce_events_per_s=round(EVENTS / produce_seconds),
            baseline_is="best of 2 single binary COPYs of the same rows (pre-encoded) into an identical table, "
            "same indexes",
            baseline_tries=[round(r) for r in baseline_tries],
            load_average_1m=round(os.getloadavg()[0], 2),
            goal_ratio=0.5,
        )
    finally:
        stop_process(broker)
        drop_database(dsn)


if __name__ == "__main__":
    main()
