"""What the tasks of the DAGs purchases_ingest and purchases_replay do (the DAG files only wire them).

Everything heavy is imported inside the functions, so that parsing the DAG files stays fast.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

from purchases.connections import kafka_settings, warehouse_dsn

log = logging.getLogger(__name__)


def topic_partitions() -> list[int]:
    from confluent_kafka import KafkaException

    from purchases.broker import partitions_of
    from purchases.load import BrokerUnavailable
    from purchases.settings import Settings

    bootstrap = kafka_settings()["bootstrap.servers"]
    topic = Settings().purchases_topic
    try:
        partitions = partitions_of(bootstrap, topic)
    except KafkaException as exc:
        raise BrokerUnavailable(
            f"cannot read the partitions of topic {topic!r} from the Kafka broker at "
            f"{bootstrap}: {exc.args[0]}. Is the broker running? The task is retried."
        ) from None
    except KeyError:
        raise BrokerUnavailable(f"topic {topic!r} does not exist on the Kafka broker at {bootstrap}") from None
    log.info("topic %s has partitions %s", topic, partitions)
    return partitions


def load_partition(partition: int, window_seconds: float, batch_max_events: int) -> dict[str, Any]:
    """One partition's micro-batches, through the warehouse connection's hook: from when the previous run's
    task hands the partition over until the next run's takes it (or the window ends)."""
    from airflow.providers.postgres.hooks.postgres import PostgresHook

    from purchases.connections import WAREHOUSE_CONN_ID
    from purchases.load import LoaderConfig
    from purchases.load import load_partition as load
    from purchases.settings import Settings

    settings = Settings()  # read at the task's start: a test points the topic elsewhere
    client = kafka_settings()
    config = LoaderConfig(
        bootstrap_servers=client.pop("bootstrap.servers"),
        dsn=warehouse_dsn(),
        topic=settings.purchases_topic,
        kafka_config=client,
        window_seconds=float(window_seconds),
        batch_max_events=int(batch_max_events),
        batch_max_bytes=settings.loader_batch_max_bytes,
        takeover_wait_seconds=settings.loader_takeover_wait_seconds,
    )
    result = load(config, partition, connection_factory=PostgresHook(postgres_conn_id=WAREHOUSE_CONN_ID).get_conn)
    log.info("partition %d: %s", partition, result.as_dict())
    return result.as_dict()


def announce(results: Iterable[Mapping[str, Any] | None], outlet_events, asset) -> dict[str, Any]:
    """Emit the 'loaded' Asset event whenever batches wait for the quality gate, or skip when none do.

    The gate finds its batches in the warehouse (staging.loaded_batches), not in this run's results: rows
    that a load task committed before it failed are checked as well."""
    import psycopg
    from airflow.sdk.exceptions import AirflowSkipException

    from purchases.check.batches import any_unchecked

    done = [dict(r) for r in results if r]
    summary = {
        "loaded": sum(r.get("loaded", 0) for r in done),
        "rejected": sum(r.get("rejected", 0) for r in done),
        "partitions": {r["partition"]: r["next_offset"] for r in done},
    }
    with psycopg.connect(warehouse_dsn(), autocommit=True) as conn:
        waiting = any_unchecked(conn)
    if not waiting:
        raise AirflowSkipException(f"no batch waits for the quality gate ({summary})")
    outlet_events[asset].extra = summary
    return summary


def replay(
    reason_contains: str | None, rejection_ids: list[int] | None, dry_run: bool, outlet_events, asset
) -> dict[str, Any]:
    """Re-drive rejected records; a replay that loaded rows tells the quality gate (they wait for it)."""
    from airflow.sdk.exceptions import AirflowSkipException

    from purchases.load.replay import replay as run_replay

    result = run_replay(
        warehouse_dsn(), reason_contains=reason_contains or None, rejection_ids=rejection_ids or None, dry_run=dry_run
    )
    log.info("replay: %s", result.as_dict())
    if dry_run or result.loaded == 0:
        raise AirflowSkipException(f"nothing new loaded: {result.as_dict()}")
    outlet_events[asset].extra = {"kind": "replay", "batch_id": result.batch_id, "loaded": result.loaded}
    return result.as_dict()
