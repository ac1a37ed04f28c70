"""Helpers for the loader tests: records, topics, customers, and what the warehouse holds for a topic."""

from __future__ import annotations

import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import psycopg
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

from purchases.contract import PurchaseEvent, new_time_ordered_id


def make_event(customer_id: uuid.UUID, n: int = 0, **overrides) -> PurchaseEvent:
    fields = dict(
        schema_version=1,
        event_id=new_time_ordered_id(),
        customer_id=customer_id,
        product_name=f"Widget {n}",
        description="blue, medium",
        quantity=1 + n % 3,
        unit_price=Decimal("12.50"),
        currency="EUR",
        purchased_at=datetime.now(UTC) - timedelta(seconds=n),
    )
    fields.update(overrides)
    return PurchaseEvent.model_construct(**fields)


def create_topic(bootstrap: str, partitions: int = 1) -> str:
    topic = f"loader_test_{secrets.token_hex(4)}"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1)])[topic].result(15)
    return topic


def produce(bootstrap: str, topic: str, records: list[tuple[bytes | None, bytes | None]], partition: int = 0) -> None:
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "linger.ms": 5,
            "message.max.bytes": 2_000_000,
            "enable.idempotence": False,
            "acks": "all",
        }
    )
    errors = []

    def on_delivery(error, _message):
        if error is not None:
            errors.append(error)

    for key, value in records:
        producer.produce(topic, key=key, value=value, partition=partition, on_delivery=on_delivery)
        producer.poll(0)
    assert producer.flush(30) == 0, "records still unacknowledged after 30 s"
    assert not errors, errors


def add_customers(dsn: str, count: int) -> list[uuid.UUID]:
    ids = [uuid.uuid4() for _ in range(count)]
    with psycopg.connect(dsn) as conn:
        with conn.cursor() as cursor:
            cursor.executemany(
                "insert into app.customers (customer_id, username, password_hash) values (%s, %s, 'x')",
                [(cid, f"loader-test-{cid}") for cid in ids],
            )
    return ids


@dataclass
class Staged:
    """What the warehouse holds for one test topic."""

    dsn: str
    topic: str

    def query(self, sql: str, *params):
        with psycopg.connect(self.dsn) as conn:
            return conn.execute(sql, params).fetchall()

    def events(self) -> dict[uuid.UUID, int]:
        """event_id -> kafka offset of the copy that was kept."""
        return dict(
            self.query("select event_id, kafka_offset from staging.purchase_events where kafka_topic = %s", self.topic)
        )

    def count(self) -> int:
        return self.query("select count(*) from staging.purchase_events where kafka_topic = %s", self.topic)[0][0]

    def rejected(self) -> list[tuple]:
        return self.query(
            "select kafka_offset, reason, raw_value, event_id, customer_id "
            "from staging.purchase_events_rejected where kafka_topic = %s order by kafka_offset, rejection_id",
            self.topic,
        )

    def passed(self) -> int:
        """Rows of this topic that the quality gate passed (what the marts may read)."""
        return self.query("select count(*) from staging.purchase_events_passed where kafka_topic = %s", self.topic)[0][
            0
        ]

    def next_offset(self, partition: int = 0) -> int | None:
        rows = self.query(
            "select next_offset from staging.kafka_offsets where kafka_topic = %s and kafka_partition = %s",
            self.topic,
            partition,
        )
        return rows[0][0] if rows else None
