"""What the ingest API tests share: the API server process, customers, and a stand-in for the loader.

Recording (Kafka -> staging) is done by the real loader, run once over the API tests' topic.
"""

from __future__ import annotations

import time
import uuid

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition
from support import ApiServer, Customer, free_port, sign_up, wait_for  # noqa: F401 - the API tests import them here

API_TOPIC = "purchases_api_tests"
API_PARTITIONS = 3


def ensure_api_topic(bootstrap: str) -> None:
    from purchases.broker import ensure_topic

    wait_for(
        lambda: ensure_topic(bootstrap, API_TOPIC, API_PARTITIONS, timeout=5) == API_PARTITIONS,
        30,
        f"topic {API_TOPIC}",
    )


class Api(ApiServer):
    """The API under test, on its own database and topic."""

    def __init__(self, port: int, env: dict, bootstrap: str):
        super().__init__(port, env, f"api_tests_{port}.log")
        self.bootstrap = bootstrap


def read_topic(bootstrap: str, topic: str = API_TOPIC, timeout: float = 30) -> list:
    """Every record on `topic`, read from the beginning until each partition signals its end."""
    from purchases.broker import partitions_of

    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"api-tests-{uuid.uuid4().hex[:6]}",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
        }
    )
    try:
        partitions = partitions_of(bootstrap, topic)
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        pending, records = set(partitions), []
        deadline = time.monotonic() + timeout
        while pending:
            assert time.monotonic() < deadline, f"partitions {pending} of {topic} never reached their end"
            message = consumer.poll(0.5)
            if message is None:
                continue
            if message.error():
                if message.error().code() == KafkaError._PARTITION_EOF:
                    pending.discard(message.partition())
                    continue
                raise RuntimeError(message.error().str())
            records.append(message)
        return records
    finally:
        consumer.close()


def record_purchases(bootstrap: str, dsn: str) -> int:
    """Runs the real loader once over the API tests' topic. Returns how many rows it loaded."""
    from purchases.load import load_available

    return sum(result.loaded for result in load_available(bootstrap, dsn, topic=API_TOPIC))
