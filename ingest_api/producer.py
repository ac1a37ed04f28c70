"""Producing purchase events and waiting for the broker's acknowledgement without blocking the event loop.

A plain confluent_kafka Producer (acks=all, idempotent) is polled by one background thread. Delivery
reports arrive on that thread; they are handed to the event loop in one `call_soon_threadsafe` per poll,
not one per message, and settle the waiting requests there. librdkafka itself gives up on a message after
`message.timeout.ms`, so every produced message is settled, as delivered or failed, within the timeout;
a sweeper on the loop is the backstop should a report never come.

If the producer hits a fatal error (an idempotent producer can, e.g. when a broker without persistence
restarts and forgets the producer id), the poll thread replaces it with a fresh one, so the API recovers
without a restart.
"""
from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Sequence

from confluent_kafka import KafkaError, KafkaException, Producer

log = logging.getLogger(__name__)


class BrokerUnavailable(Exception):
    """The broker did not acknowledge the event(s) in time; nothing may be reported as accepted."""


class _Delivery:
    """Waits for the reports of `remaining` messages; settles `future` with None or the first error."""

    __slots__ = ("future", "remaining", "error", "owner", "deadline")

    def __init__(self, future: asyncio.Future, count: int, owner: PurchaseProducer, deadline: float):
        self.future = future
        self.remaining = count
        self.error: str | None = None
        self.owner = owner
        self.deadline = deadline

    # Called by librdkafka on the poll thread, the only thread that swaps `_reports`; the loop does the rest.
    def __call__(self, err: KafkaError | None, _msg) -> None:
        self.owner._reports.append((self, err))


def _is_fatal(exc: Exception) -> bool:
    error = exc.args[0] if exc.args else None
    return isinstance(error, KafkaError) and (error.fatal() or error.code() == KafkaError._FATAL)


class PurchaseProducer:
    def __init__(self, bootstrap_servers: str, topic: str, timeout_seconds: float = 5.0,
                 linger_ms: float = 1.0, extra_config: dict | None = None):
        self.topic = topic
        self.timeout = timeout_seconds
        # librdkafka's own deadline stays under ours, so its verdict ("delivered" or "failed") comes first.
        message_timeout_ms = max(500, int(timeout_seconds * 1000) - 500)
        self._config = {
            "bootstrap.servers": bootstrap_servers,
            "client.id": "ingest-api",
            "acks": "all",
            "enable.idempotence": True,
            "linger.ms": linger_ms,
            "message.timeout.ms": message_timeout_ms,
            "socket.connection.setup.timeout.ms": min(message_timeout_ms, 3000),
            "reconnect.backoff.ms": 50,
            "reconnect.backoff.max.ms": 1000,
            "queue.buffering.max.messages": 500_000,
            "queue.buffering.max.kbytes": 512 * 1024,
            # A producer must not create the topic (with the broker's default partition count) by asking
            # for its metadata while the broker comes back; the topic is created on purpose elsewhere.
            "allow.auto.create.topics": False,
            "error_cb": self._on_error,
            "logger": log,
            **(extra_config or {}),
        }
        self._producer: Producer | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._reports: list = []
        self._waiting: dict[_Delivery, None] = {}  # insertion order = deadline order
        self._needs_new_producer = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._sweeper: asyncio.Task | None = None
        self.last_error: str | None = None

    # lifecycle ---------------------------------------------------------------------------------------

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._producer = Producer(self._config)
        self._thread = threading.Thread(target=self._poll_forever, name="kafka-producer-poll", daemon=True)
        self._thread.start()
        self._sweeper = asyncio.create_task(self._sweep_forever())
        # Connect now rather than on the first purchase (which would wait for the connection and the
        # idempotent producer id); if the broker is not there yet, librdkafka keeps trying by itself.
        self._warm_up = asyncio.create_task(asyncio.to_thread(self._connect_quietly))

    def _connect_quietly(self) -> None:
        try:
            self._producer.list_topics(self.topic, timeout=self.timeout)
        except KafkaException as exc:
            log.warning("broker not reachable at start (will keep trying): %s", exc)

    async def stop(self, flush_timeout: float = 5.0) -> None:
        if self._sweeper:
            self._sweeper.cancel()
        self._stopping.set()
        if self._thread:
            await asyncio.to_thread(self._thread.join)
        if self._producer is not None:
            await asyncio.to_thread(self._producer.flush, flush_timeout)
        self._settle(self._reports)
        self._fail_all("the API is shutting down")

    # producing ---------------------------------------------------------------------------------------

    async def send(self, key: bytes, value: bytes) -> None:
        """Produce one event; return once the broker acknowledged it, else raise BrokerUnavailable."""
        delivery = self._delivery(1)
        try:
            self._producer.produce(self.topic, value, key, on_delivery=delivery)
        except (BufferError, KafkaException) as exc:
            self._forget(delivery)
            raise BrokerUnavailable(self._local_failure(exc)) from None
        await self._wait(delivery)

    async def send_many(self, messages: Sequence[tuple[bytes, bytes]]) -> None:
        """Produce several events; return once the broker acknowledged all of them, else raise."""
        delivery = self._delivery(len(messages))
        produce, topic = self._producer.produce, self.topic
        for sent, (key, value) in enumerate(messages):
            try:
                produce(topic, value, key, on_delivery=delivery)
            except (BufferError, KafkaException) as exc:
                # What was produced already still reports; the request fails once those are settled.
                delivery.error = self._local_failure(exc)
                delivery.remaining -= len(messages) - sent
                if delivery.remaining == 0:
                    self._forget(delivery)
                    raise BrokerUnavailable(delivery.error) from None
                break
        await self._wait(delivery)

    def broker_reachable(self, timeout: float = 2.0) -> bool:
        """Blocking: ask the broker for the topic's metadata (run it in a thread)."""
        metadata = self._producer.list_topics(self.topic, timeout=timeout)
        topic = metadata.topics.get(self.topic)
        return bool(metadata.brokers) and topic is not None and topic.error is None and bool(topic.partitions)

    # internals ---------------------------------------------------------------------------------------

    def _delivery(self, count: int) -> _Delivery:
        delivery = _Delivery(self._loop.create_future(), count, self, time.monotonic() + self.timeout)
        self._waiting[delivery] = None
        return delivery

    def _forget(self, delivery: _Delivery) -> None:
        self._waiting.pop(delivery, None)

    async def _wait(self, delivery: _Delivery) -> None:
        error = await delivery.future
        if error is not None:
            raise BrokerUnavailable(error)

    def _local_failure(self, exc: Exception) -> str:
        if isinstance(exc, BufferError):
            return "the producer's local queue is full"
        if _is_fatal(exc):
            self._needs_new_producer.set()
        return f"produce failed: {exc}"

    def _on_error(self, error: KafkaError) -> None:
        # Runs on the poll thread. Transient errors (broker down, ...) are retried by librdkafka itself;
        # they repeat at every reconnect attempt, so only a change is worth a warning.
        if error.fatal():
            log.error("kafka producer fatal error, replacing the producer: %s", error.str())
            self._needs_new_producer.set()
        elif error.str() != self.last_error:
            log.warning("kafka producer: %s", error.str())
        self.last_error = error.str()

    def _poll_forever(self) -> None:
        loop = self._loop
        while not self._stopping.is_set():
            if self._needs_new_producer.is_set():
                self._replace_producer()
            try:
                self._producer.poll(0.05)
            except KafkaException as exc:
                # Fatal errors surface here (e.g. UNKNOWN_PRODUCER_ID after a broker lost its state).
                log.error("kafka producer: %s", exc)
                if _is_fatal(exc):
                    self._needs_new_producer.set()
            except Exception:  # noqa: BLE001 - the poll thread must survive anything
                log.exception("kafka producer poll failed")
                time.sleep(0.1)
            if self._reports:
                reports, self._reports = self._reports, []
                try:
                    loop.call_soon_threadsafe(self._settle, reports)
                except RuntimeError:  # loop closed: shutting down
                    return

    def _replace_producer(self) -> None:
        self._needs_new_producer.clear()
        old = self._producer
        self._producer = Producer(self._config)
        try:
            old.purge()  # outstanding messages report an error now instead of never
            old.flush(0)
        except KafkaException:
            pass  # a fatal producer raises its error again; the purge has done its work
        except Exception:  # noqa: BLE001
            log.exception("purging the failed kafka producer")

    def _settle(self, reports: list) -> None:
        waiting = self._waiting
        for delivery, err in reports:
            if err is not None and delivery.error is None:
                delivery.error = f"broker did not acknowledge: {err.str()}"
            delivery.remaining -= 1
            if delivery.remaining == 0 and delivery in waiting:
                del waiting[delivery]
                if not delivery.future.done():
                    delivery.future.set_result(delivery.error)

    def _fail_all(self, reason: str) -> None:
        for delivery in list(self._waiting):
            del self._waiting[delivery]
            if not delivery.future.done():
                delivery.future.set_result(reason)

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(0.25)
            now = time.monotonic()
            expired = []
            for delivery in self._waiting:
                if delivery.deadline > now:
                    break
                expired.append(delivery)
            for delivery in expired:
                del self._waiting[delivery]
                if not delivery.future.done():
                    delivery.future.set_result(f"no acknowledgement from the broker within {self.timeout:g} s")
