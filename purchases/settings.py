"""Every setting of the product, defined once: its environment variable, its working local default, its doc.

The API, the loader, the DAGs, the CLI and the benchmarks read `get_settings()`; nothing else reads the
product's environment variables. `scripts/env.sh` exports only what other programs need and cannot default
themselves, derived from here (`python -m purchases.settings exports`): Airflow's connections
(AIRFLOW_CONN_*), its metadata database and dbt's profile variables (DBT_*). `python -m purchases.settings
table` prints the Markdown table docs/operations.md shows (a test keeps them equal).
"""

from __future__ import annotations

import argparse
import json
import shlex
from functools import lru_cache
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from purchases.contract import TOPIC

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def _setting(default, env: str, doc: str, **kwargs):
    return Field(default, alias=env, description=doc, **kwargs)


class Settings(BaseSettings):
    """Grouped by the part that reads them; each is an environment variable (the alias)."""

    model_config = SettingsConfigDict(env_file=None, extra="ignore", populate_by_name=True)

    # --- where things are ---------------------------------------------------------------------------------
    warehouse_dsn: str = _setting(
        "postgresql://postgres@127.0.0.1:5432/purchases",
        "WAREHOUSE_DSN",
        "The warehouse: app.customers, staging.*, marts.* (libpq DSN or URL).",
    )
    airflow_database_url: str = _setting(
        "postgresql+psycopg2://postgres@127.0.0.1:5432/airflow",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN",
        "Airflow's metadata database (SQLAlchemy URL); `make up` creates the database.",
    )
    kafka_bootstrap_servers: str = _setting("127.0.0.1:9092", "KAFKA_BOOTSTRAP_SERVERS", "The Kafka broker(s).")
    kafka_mode: str = _setting(
        "embedded",
        "KAFKA_MODE",
        "`embedded`: `make up` runs the in-memory tansu broker at KAFKA_BOOTSTRAP_SERVERS; "
        "`external`: something else serves it (Apache Kafka).",
    )
    purchases_topic: str = _setting(TOPIC, "PURCHASES_TOPIC", "The topic purchases are produced to.")
    purchases_partitions: int = _setting(3, "PURCHASES_PARTITIONS", "Partitions of the topic when it is created.")

    # --- the ingest API -----------------------------------------------------------------------------------
    api_host: str = _setting("127.0.0.1", "API_HOST", "Address the API listens on.")
    api_port: int = _setting(8000, "API_PORT", "Port of the API and the web page.")
    api_workers: int = _setting(1, "API_WORKERS", "uvicorn worker processes.")
    jwt_secret: str = _setting("", "JWT_SECRET", "Signs the API's tokens; `make up` generates one into .secrets/.")
    jwt_ttl_seconds: int = _setting(3600, "JWT_TTL_SECONDS", "Lifetime of a token.")
    produce_timeout_seconds: float = _setting(
        5.0, "PRODUCE_TIMEOUT_SECONDS", "Longest wait for the broker's acknowledgement before 503."
    )
    broker_retry_after_seconds: int = _setting(
        2, "API_BROKER_RETRY_AFTER_SECONDS", "Retry-After told when the broker did not take an event."
    )
    max_body_bytes: int = _setting(64 * 1024, "API_MAX_BODY_BYTES", "Bodies larger than this: 413.")
    max_batch_body_bytes: int = _setting(
        8 * 1024 * 1024, "API_MAX_BATCH_BODY_BYTES", "The same for POST /purchases/batch."
    )
    login_max_failures: int = _setting(5, "API_LOGIN_MAX_FAILURES", "Wrong passwords per username before 429.")
    login_failure_window_seconds: int = _setting(
        15 * 60, "API_LOGIN_FAILURE_WINDOW_SECONDS", "The window those are counted in."
    )
    password_hash_concurrency: int = _setting(
        2, "API_PASSWORD_HASH_CONCURRENCY", "Password hashes (argon2id, CPU-bound) computed at once per worker."
    )
    password_hash_queue: int = _setting(
        16,
        "API_PASSWORD_HASH_QUEUE",
        "Logins, sign-ups and password changes that may wait for a hash per worker; beyond, 503 + Retry-After.",
    )
    session_revocation_refresh_seconds: float = _setting(
        2.0,
        "API_SESSION_REVOCATION_REFRESH_SECONDS",
        "How often each worker learns of password changes (tokens issued before one stop working).",
    )
    idempotency_cache_size: int = _setting(
        100_000,
        "API_IDEMPOTENCY_CACHE_SIZE",
        "Idempotency-Keys per worker whose body is remembered, to refuse a reuse with another body.",
    )
    idempotency_cache_seconds: int = _setting(
        24 * 3600, "API_IDEMPOTENCY_CACHE_SECONDS", "How long such a key's body is remembered."
    )
    limit_concurrency: int = _setting(
        2_000,
        "API_LIMIT_CONCURRENCY",
        "Connections and requests a worker serves at once; beyond, new requests are answered 503 at once.",
    )
    timeout_keep_alive_seconds: int = _setting(
        5, "API_TIMEOUT_KEEP_ALIVE_SECONDS", "An idle keep-alive connection is closed after this."
    )
    db_pool_min_size: int = _setting(1, "API_DB_POOL_MIN_SIZE", "The API's Postgres connection pool, at least.")
    db_pool_max_size: int = _setting(8, "API_DB_POOL_MAX_SIZE", "... and at most.")
    producer_linger_ms: float = _setting(
        1.0, "API_PRODUCER_LINGER_MS", "librdkafka's batching delay; small keeps the 202 fast."
    )

    # --- the loader (Airflow DAG purchases_ingest) ---------------------------------------------------------
    loader_run_every_seconds: float = _setting(
        20.0,
        "PURCHASES_LOADER_RUN_EVERY_SECONDS",
        "A loader run starts this often; its partition tasks take each partition over from the run before.",
    )
    # 1.5 runs long: the next run's task has 10 s to start and take over. Not longer: a scheduler that is
    # stopped waits for its running tasks (the LocalExecutor), so this bounds how long a stop takes.
    loader_window_seconds: float = _setting(
        30.0,
        "PURCHASES_LOADER_WINDOW_SECONDS",
        "Longest a partition's load task keeps taking micro-batches when no next run takes the partition over.",
    )
    loader_takeover_wait_seconds: float = _setting(
        30.0,
        "PURCHASES_LOADER_TAKEOVER_WAIT_SECONDS",
        "Longest a load task waits for the partition's previous loader to hand it over before it fails.",
    )
    loader_batch_max_events: int = _setting(
        20_000, "PURCHASES_LOADER_BATCH_MAX_EVENTS", "Most records in one batch (one transaction)."
    )
    loader_batch_max_bytes: int = _setting(
        16 * 1024 * 1024, "PURCHASES_LOADER_BATCH_MAX_BYTES", "Most record bytes in one batch."
    )
    loader_retries: int = _setting(3, "PURCHASES_LOADER_RETRIES", "Airflow retries of the ingest tasks.")
    loader_retry_delay_seconds: float = _setting(10.0, "PURCHASES_LOADER_RETRY_DELAY_SECONDS", "Between those retries.")
    drain_timeout_seconds: float = _setting(
        120.0, "DRAIN_TIMEOUT_SECONDS", "`make down`: longest wait for the broker to be drained into staging."
    )

    # --- the quality gate, dbt, Grafana ---------------------------------------------------------------------
    gx_data_docs_dir: Path = _setting(
        PROJECT_ROOT / "gx" / "uncommitted" / "data_docs" / "staging_quality",
        "GX_DATA_DOCS_DIR",
        "Where the quality gate writes its Data Docs.",
    )
    dbt_project_dir: Path = _setting(PROJECT_ROOT / "dbt", "DBT_PROJECT_DIR", "The dbt project.")
    dbt_profiles_dir: Path | None = _setting(
        None, "DBT_PROFILES_DIR", "dbt's profiles.yml (default: the project's, which reads DBT_*)."
    )
    dbt_manifest_path: Path | None = _setting(
        None,
        "DBT_MANIFEST_PATH",
        "The manifest Cosmos renders the transform DAG from (default: target/cosmos/manifest.json in the project).",
    )
    dbt_docs_dir: Path | None = _setting(
        None, "DBT_DOCS_DIR", "Where the dbt docs page is written (default: target/docs)."
    )
    dbt_threads: int = _setting(2, "DBT_THREADS", "dbt's threads.")
    api_db_password: str = _setting(
        "", "API_DB_PASSWORD", "Password of the API's warehouse role (purchases_api); generated by `make up`."
    )
    loader_db_password: str = _setting(
        "", "LOADER_DB_PASSWORD", "Password of the loader's role (purchases_loader); generated by `make up`."
    )
    gate_db_password: str = _setting(
        "", "GATE_DB_PASSWORD", "Password of the quality gate's role (purchases_gate); generated by `make up`."
    )
    dbt_db_password: str = _setting(
        "", "DBT_DB_PASSWORD", "Password of dbt's role (purchases_dbt, owner of marts); generated by `make up`."
    )
    grafana_reader_password: str = _setting(
        "", "GRAFANA_READER_PASSWORD", "Password of the read-only role Grafana uses; generated by `make up`."
    )

    def dsn_as(self, role: str) -> str:
        """The warehouse DSN for one part's role (purchases.roles: api, loader, gate, dbt, reader), with its
        password. WAREHOUSE_DSN itself is the owner's: migrations, roles, tests' fixtures, nothing else."""
        from purchases.roles import ROLES

        part = ROLES[role]
        return postgres_url(self.warehouse_dsn, user=part.name, password=getattr(self, part.password_setting))

    @property
    def profiles_dir(self) -> Path:
        return self.dbt_profiles_dir or self.dbt_project_dir

    @property
    def manifest_path(self) -> Path:
        return self.dbt_manifest_path or self.dbt_project_dir / "target" / "cosmos" / "manifest.json"

    @property
    def docs_dir(self) -> Path:
        return self.dbt_docs_dir or self.dbt_project_dir / "target" / "docs"


@lru_cache
def get_settings() -> Settings:
    return Settings()


def postgres_url(dsn: str, **changes: str) -> str:
    """A libpq DSN (keywords or URL) as a postgresql:// URL, with `changes` (e.g. dbname=...) applied: the
    form Airflow's connections take, and the one the docs show."""
    from urllib.parse import quote

    from psycopg.conninfo import conninfo_to_dict

    params = {**conninfo_to_dict(dsn), **changes}
    user = quote(params.pop("user", ""), safe="")
    password = params.pop("password", None)
    auth = f"{user}:{quote(password, safe='')}@" if password else (f"{user}@" if user else "")
    host, port, dbname = params.pop("host", ""), params.pop("port", None), params.pop("dbname", "")
    query = "&".join(f"{key}={quote(str(value), safe='')}" for key, value in sorted(params.items()))
    return f"postgresql://{auth}{host}{':' + str(port) if port else ''}/{quote(dbname, safe='')}" + (
        f"?{query}" if query else ""
    )


def exports(settings: Settings, environment: dict[str, str]) -> dict[str, str]:
    """What other programs read, derived from the settings; a variable already set is left as it is.

    Airflow reads its connections from AIRFLOW_CONN_* and its database from its own variable; dbt's
    profile (dbt/profiles.yml, for dbt run by hand and by tests) from DBT_*; the scripts of `make up`
    read a few settings themselves.
    """
    from psycopg.conninfo import conninfo_to_dict

    warehouse = conninfo_to_dict(settings.dsn_as("dbt"))
    derived = {
        # The loader's and the replay's tasks; the quality gate's; dbt's (Cosmos maps it to its profile).
        "AIRFLOW_CONN_WAREHOUSE": settings.dsn_as("loader"),
        "AIRFLOW_CONN_WAREHOUSE_GATE": settings.dsn_as("gate"),
        "AIRFLOW_CONN_WAREHOUSE_DBT": settings.dsn_as("dbt"),
        "AIRFLOW_CONN_KAFKA_DEFAULT": json.dumps(
            {"conn_type": "kafka", "extra": {"bootstrap.servers": settings.kafka_bootstrap_servers}}
        ),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": settings.airflow_database_url,
        "DBT_HOST": warehouse.get("host", "127.0.0.1"),
        "DBT_PORT": warehouse.get("port", "5432"),
        "DBT_USER": warehouse["user"],
        "DBT_PASSWORD": warehouse.get("password", ""),
        "DBT_DBNAME": warehouse.get("dbname", "purchases"),
        "DBT_THREADS": str(settings.dbt_threads),
        # read by scripts/up.sh, down.sh and the Procfile themselves
        "WAREHOUSE_DSN": settings.warehouse_dsn,
        "KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
        "KAFKA_MODE": settings.kafka_mode,
        "PURCHASES_TOPIC": settings.purchases_topic,
        "API_HOST": settings.api_host,
        "API_PORT": str(settings.api_port),
        "API_WORKERS": str(settings.api_workers),
    }
    return {name: value for name, value in derived.items() if name not in environment}


def table() -> str:
    """Every setting as a Markdown table: variable, default, what it does."""
    lines = ["| variable | default | what |", "| --- | --- | --- |"]
    for field in Settings.model_fields.values():
        default = field.default
        if isinstance(default, Path):
            default = default.relative_to(PROJECT_ROOT) if default.is_relative_to(PROJECT_ROOT) else default
        shown = "(none)" if default in (None, "") else f"`{default}`"
        lines.append(f"| `{field.alias}` | {shown} | {field.description} |")
    return "\n".join(lines) + "\n"


def _main() -> None:
    import os

    parser = argparse.ArgumentParser(prog="python -m purchases.settings", description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=["exports", "table"])
    args = parser.parse_args()
    if args.command == "exports":
        for name, value in exports(get_settings(), dict(os.environ)).items():
            print(f"export {name}={shlex.quote(value)}")
    else:
        print(table(), end="")


if __name__ == "__main__":
    _main()
