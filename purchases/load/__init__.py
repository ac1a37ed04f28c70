"""Load: Kafka topic `purchases` -> `staging.purchase_events`, exactly once, one record never stopping the rest.

How a batch is made exactly once (docs/loading.md has the long version):

1. The partition is `assign()`ed at the offset stored in `staging.kafka_offsets` (no consumer group: the
   warehouse, not the broker, owns progress) and read until partition EOF, a cap (records, bytes, time) or an
   idle pause (`kafka.PartitionReader`).
2. Each record becomes a staging row or a rejection, by the event contract (`records`).
3. In ONE transaction (`staging.write_batch`): lock the partition's offset row and check it still says where
   the batch starts; COPY the rows (isolating any Postgres refuses); keep the rejections; record the batch for
   the quality gate; move the offset; commit.

A crash anywhere before the commit leaves nothing behind and the offset unchanged, so the next run reads
the same records again; after the commit everything is there and the offset has moved past it.
"""

from purchases.load.config import LoaderConfig
from purchases.load.kafka import BrokerUnavailable, LoaderError, LogTruncated, TopicRecreated
from purchases.load.run import RunResult, load_available, load_partition, rewind
from purchases.load.staging import PAUSE_BEFORE_COMMIT_ENV, stored_offset

__all__ = [
    "PAUSE_BEFORE_COMMIT_ENV",
    "BrokerUnavailable",
    "LoaderConfig",
    "LoaderError",
    "LogTruncated",
    "RunResult",
    "TopicRecreated",
    "load_available",
    "load_partition",
    "rewind",
    "stored_offset",
]
