"""What the Airflow tasks of the ingest, quality and replay DAGs do; dags/purchases_ingest.py only wires them.

Configuration comes from Airflow connections through the providers' hooks: `kafka_default` (apache-kafka
provider) and `warehouse` (postgres provider). Everything heavy is imported inside the functions, so that
parsing the DAG file stays fast.
"""
from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

log = logging.getLogger(__name__)

KAFKA_CONN_ID = "kafka_default"
WAREHOUSE_CONN_ID = "warehouse"


def kafka_settings(conn_id: str = KAFKA_CONN_ID) -> dict[str, Any]:
    """The librdkafka settings of the Kafka connection, resolved by the provider's hook (auth callbacks too)."""
    from airflow.providers.apache.kafka.hooks.base import KafkaBaseHook

    # _build_config is the hook's own connection -> client settings step (used for every client it makes);
    # the hook has no public way to get it without also building an AdminClient or a subscribed consumer.
    return dict(KafkaBaseHook(kafka_config_id=conn_id)._build_config())


def warehouse_dsn(conn_id: str = WAREHOUSE_CONN_ID) -> str:
    from airflow.providers.postgres.hooks.postgres import PostgresHook
    from psycopg.conninfo import make_conninfo

    connection = PostgresHook(postgres_conn_id=conn_id).connection
    params = {"host": connection.host, "port": connection.port, "user": connection.login,
              "password": connection.password, "dbname": connection.schema}
    return make_conninfo(**{k: v for k, v in params.items() if v not in (None, "")})


def loader_config(window_seconds: float, batch_max_events: int):
    from purchases.load import LoaderConfig
    from purchases.settings import Settings

    settings = kafka_settings()
    bootstrap = settings.pop("bootstrap.servers")
    return LoaderConfig(bootstrap_servers=bootstrap, dsn=warehouse_dsn(), topic=Settings().purchases_topic,
                        kafka_config=settings, window_seconds=float(window_seconds),
                        batch_max_events=int(batch_max_events))


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
        raise BrokerUnavailable(f"cannot read the partitions of topic {topic!r} from the Kafka broker at "
                                f"{bootstrap}: {exc.args[0]}. Is the broker running? The task is retried.") from None
    except KeyError:
        raise BrokerUnavailable(f"topic {topic!r} does not exist on the Kafka broker at {bootstrap}") from None
    log.info("topic %s has partitions %s", topic, partitions)
    return partitions


def load(partition: int, window_seconds: float, batch_max_events: int) -> dict[str, Any]:
    from airflow.providers.postgres.hooks.postgres import PostgresHook

    from purchases.load import load_partition

    config = loader_config(window_seconds, batch_max_events)
    hook = PostgresHook(postgres_conn_id=WAREHOUSE_CONN_ID)
    result = load_partition(config, partition, connection_factory=hook.get_conn)
    log.info("partition %d: %s", partition, result.as_dict())
    return result.as_dict()


def announce(results: Iterable[Mapping[str, Any] | None], outlet_events, asset) -> dict[str, Any]:
    """Emit the 'loaded' Asset event whenever batches wait for the quality gate, or skip when none do.

    The gate finds its batches in the warehouse (staging.loaded_batches), not in this run's results: rows
    that a load task committed before it failed are checked as well."""
    from airflow.sdk.exceptions import AirflowSkipException

    import psycopg

    from purchases.check.batches import any_unchecked

    done = [dict(r) for r in results if r]
    summary = {"loaded": sum(r.get("loaded", 0) for r in done), "rejected": sum(r.get("rejected", 0) for r in done),
               "partitions": {r["partition"]: r["next_offset"] for r in done}}
    with psycopg.connect(warehouse_dsn(), autocommit=True) as conn:
        waiting = any_unchecked(conn)
    if not waiting:
        raise AirflowSkipException(f"no batch waits for the quality gate ({summary})")
    outlet_events[asset].extra = summary
    return summary


def quality_gate(run_name: str, outlet_events, asset) -> dict[str, Any]:
    from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

    from purchases.check import QualityGateFailed, run_quality_gate

    try:
        result = run_quality_gate(warehouse_dsn(), run_name=run_name)
    except QualityGateFailed as exc:
        # Bad rows do not get better by retrying: fail now, visibly, and hold the transform back.
        raise AirflowFailException(str(exc)) from None
    if result.rows == 0:
        raise AirflowSkipException(f"no new rows passed the gate ({result.batches} batches without rows)")
    outlet_events[asset].extra = {"rows": result.rows, "batches": result.batches, "data_docs": result.data_docs}
    return result.as_dict()


def replay(reason_contains: str | None, rejection_ids: list[int] | None, dry_run: bool, outlet_events,
           asset) -> dict[str, Any]:
    from airflow.sdk.exceptions import AirflowSkipException

    from purchases.load.replay import replay as run_replay

    result = run_replay(warehouse_dsn(), reason_contains=reason_contains or None,
                        rejection_ids=rejection_ids or None, dry_run=dry_run)
    log.info("replay: %s", result.as_dict())
    if dry_run or result.loaded == 0:
        raise AirflowSkipException(f"nothing new loaded: {result.as_dict()}")
    outlet_events[asset].extra = {"kind": "replay", "batch_id": result.batch_id, "loaded": result.loaded}
    return result.as_dict()
