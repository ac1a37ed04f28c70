"""The Airflow connections the pipeline's tasks use, resolved by the providers' hooks.

`warehouse`, `warehouse_gate` and `warehouse_dbt` (postgres provider; each the warehouse as one part's role)
and `kafka_default` (apache-kafka provider) come from AIRFLOW_CONN_* environment variables (scripts/env.sh
derives them from the settings; docker-compose.yml sets them).
"""

from __future__ import annotations

from typing import Any

KAFKA_CONN_ID = "kafka_default"
WAREHOUSE_CONN_ID = "warehouse"  # the loader's role (purchases.roles): the load and replay tasks
GATE_CONN_ID = "warehouse_gate"  # the quality gate's role
DBT_CONN_ID = "warehouse_dbt"  # dbt's role: Cosmos maps it to dbt's profile


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
    params = {
        "host": connection.host,
        "port": connection.port,
        "user": connection.login,
        "password": connection.password,
        "dbname": connection.schema,
    }
    return make_conninfo(**{k: v for k, v in params.items() if v not in (None, "")})
