"""What one loader run is told: where the broker and the warehouse are, and the bounds of its batches."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from purchases.contract import TOPIC


@dataclass(frozen=True)
class LoaderConfig:
    bootstrap_servers: str
    dsn: str | None = None
    topic: str = TOPIC
    # Extra librdkafka settings (security, timeouts) from the Airflow connection; never group settings.
    kafka_config: dict[str, Any] = field(default_factory=dict)
    # A batch is one Postgres transaction. It ends at the partition's end (EOF), at either cap, after an idle
    # pause, or after batch_max_seconds. The caps bound the loader's memory: records, and their bytes (a
    # record may be as large as the broker allows, far beyond an event's 16 KiB).
    batch_max_events: int = 20_000
    batch_max_bytes: int = 16 * 1024 * 1024
    # No record for this long ends a batch, so a trickle of events does not wait for a full one.
    idle_seconds: float = 0.3
    # Under a steady stream EOF and idle pauses may never come; without this bound one batch took in two
    # minutes of purchases before committing any.
    batch_max_seconds: float = 1.0
    # How long one loader run keeps taking micro-batches at most. It ends sooner when another loader asks for
    # the partition (purchases/load/writer.py): the next DAG run's task, which starts before this one ends.
    window_seconds: float = 20.0
    # How long a loader waits for the partition's previous writer to hand it over before it fails.
    takeover_wait_seconds: float = 30.0
    # With no EOF and no record for this long right after assign(), the loader checks whether the broker's
    # log still reaches the stored offset (an in-memory broker loses its log on restart).
    stall_check_seconds: float = 5.0
    # How long every broker of the cluster may be unreachable before the run fails.
    broker_down_seconds: float = 15.0
    # The log end the loader saw is recorded (staging.kafka_log_ends) at most this often per partition.
    log_end_record_seconds: float = 1.0
