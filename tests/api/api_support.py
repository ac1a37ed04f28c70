"""What the ingest API tests share: the API server process, customers, and a stand-in for the loader.

Recording (Kafka -> staging) is the loader's job; here `copy_topic_to_staging` copies the API tests' topic
into staging.purchase_events, exactly as the schema (the loader's contract) says, so that the reads can be
tested. Tests that use it would be better driven by the real loader (purchases.loader) once it lands.
"""
from __future__ import annotations

import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psycopg
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

ROOT = Path(__file__).resolve().parents[2]
LOG_DIR = ROOT / "logs" / "tests"
API_TOPIC = "purchases_api_tests"
API_PARTITIONS = 3


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate, timeout: float, what: str):
    deadline, last = time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except Exception as exc:  # noqa: BLE001 - reported if it never succeeds
            last = exc
        time.sleep(0.2)
    raise TimeoutError(f"{what} not ready after {timeout:.0f} s (last error: {last!r})")


def ensure_api_topic(bootstrap: str) -> None:
    from purchases.broker import ensure_topic

    wait_for(lambda: ensure_topic(bootstrap, API_TOPIC, API_PARTITIONS, timeout=5) == API_PARTITIONS, 30,
              f"topic {API_TOPIC}")


class Api:
    def __init__(self, port: int, env: dict, bootstrap: str):
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.env = env
        self.bootstrap = bootstrap
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        LOG_DIR.mkdir(parents=True, exist_ok=True)
        log = open(LOG_DIR / f"api_tests_{self.port}.log", "ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "ingest_api.main:app", "--host", "127.0.0.1", "--port", str(self.port),
             "--no-access-log"], cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        wait_for(lambda: httpx.get(self.url + "/healthz", timeout=1).status_code == 200, 60, "ingest API")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@dataclass
class Customer:
    id: str
    username: str
    password: str
    token: str
    headers: dict = field(default_factory=dict)


def sign_up(client: httpx.Client, name: str = "c") -> Customer:
    username, password = f"{name}_{uuid.uuid4().hex[:10]}", f"pw-{uuid.uuid4().hex}"
    created = client.post("/customers", json={"username": username, "password": password})
    assert created.status_code == 201, created.text
    token = client.post("/auth/token", data={"username": username, "password": password})
    assert token.status_code == 200, token.text
    access = token.json()["access_token"]
    return Customer(created.json()["customer_id"], username, password, access, {"Authorization": f"Bearer {access}"})


def read_topic(bootstrap: str, topic: str = API_TOPIC, timeout: float = 30) -> list:
    """Every record on `topic`, read from the beginning until each partition signals its end."""
    from purchases.broker import partitions_of

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"api-tests-{uuid.uuid4().hex[:6]}",
                         "enable.auto.commit": False, "enable.partition.eof": True})
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


def copy_topic_to_staging(bootstrap: str, dsn: str) -> int:
    """Stand-in for the loader: valid events of known customers into staging.purchase_events, first copy
    of an event id wins. Returns how many rows were new."""
    from purchases.contract import InvalidEvent, parse_event

    rows = []
    for message in read_topic(bootstrap):
        try:
            event = parse_event(message.value())
        except InvalidEvent:
            continue
        rows.append((event.event_id, event.customer_id, event.product_name, event.description, event.quantity,
                     event.unit_price, event.currency, event.purchased_at, event.schema_version,
                     message.topic(), message.partition(), message.offset()))
    with psycopg.connect(dsn) as conn:
        before = conn.execute("select count(*) from staging.purchase_events").fetchone()[0]
        with conn.cursor() as cur:
            cur.executemany(
                """insert into staging.purchase_events (event_id, customer_id, product_name, description, quantity,
                       unit_price, currency, purchased_at, schema_version, kafka_topic, kafka_partition, kafka_offset)
                   select %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s
                   where exists (select 1 from app.customers where customer_id = %s)
                   on conflict (event_id) do nothing""",
                [row + (row[1],) for row in rows])
        return conn.execute("select count(*) from staging.purchase_events").fetchone()[0] - before
