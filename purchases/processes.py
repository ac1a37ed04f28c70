"""The processes tests and benchmarks start, handled the same way everywhere: a free port, waiting until
something answers, an embedded broker of their own, and stopping a child (ask, wait, then insist)."""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate, timeout: float, what: str, interval: float = 0.2):
    """Calls `predicate` until it returns something true (returned) or `timeout` passes (TimeoutError)."""
    deadline = time.monotonic() + timeout
    last_error = None
    while time.monotonic() < deadline:
        try:
            result = predicate()
            if result:
                return result
        except Exception as exc:  # noqa: BLE001 - reported below if it never succeeds
            last_error = exc
        time.sleep(interval)
    raise TimeoutError(f"{what} not ready after {timeout:.0f} s (last error: {last_error!r})")


def stop_process(process: subprocess.Popen | None, timeout: float = 10) -> None:
    """SIGTERM, up to `timeout` seconds for a clean exit, then SIGKILL. A process already gone is left be."""
    if process and process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


class EmbeddedBroker:
    """The embedded Kafka-protocol broker (tansu) on a port of its own, with the topics asked for.

    In memory: `restart()` (or stop and start) comes back with empty topics of new topic ids."""

    def __init__(self, log_path: Path, topics: dict[str, int] | None = None, port: int | None = None):
        self.port = port or free_port()
        self.bootstrap = f"127.0.0.1:{self.port}"
        self.log_path = log_path
        self.topics = topics if topics is not None else {"purchases": 3}
        self.process: subprocess.Popen | None = None

    def start(self) -> EmbeddedBroker:
        from purchases.broker import ensure_topic, start_embedded_broker

        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.process = start_embedded_broker("127.0.0.1", self.port, self.log_path)
        wait_for(
            lambda: socket.create_connection(("127.0.0.1", self.port), timeout=1).close() or True,
            20,
            f"embedded broker on {self.bootstrap}",
        )
        for topic, partitions in self.topics.items():
            wait_for(
                lambda topic=topic, partitions=partitions: (
                    ensure_topic(self.bootstrap, topic, partitions, timeout=5) == partitions
                ),
                30,
                f"topic {topic}",
            )
        return self

    def stop(self) -> None:
        stop_process(self.process)
        self.process = None

    def restart(self) -> None:
        self.stop()
        self.start()
