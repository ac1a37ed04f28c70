"""Helpers the test folders share, one per job: the real processes they start (the API; the broker and free
ports come from purchases.processes, which the benchmarks share), customers signed up over HTTP, DAGs as
the DAG processor reads them, generated-example counts, and rows put into staging as the gate passes them."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from purchases.processes import EmbeddedBroker, free_port, stop_process, wait_for  # noqa: F401 - shared here

ROOT = Path(__file__).resolve().parents[1]
LOG_DIR = ROOT / "logs" / "tests"
# `make fuzz` sets this: the generated-input tests (hypothesis) then run FUZZ_FACTOR times their examples.
FUZZ_FACTOR = 25 if os.environ.get("HYPOTHESIS_PROFILE") == "fuzz" else 1


def examples(in_make_test: int) -> int:
    """How many generated examples a test runs: enough for `make test`'s time budget, more in `make fuzz`."""
    return in_make_test * FUZZ_FACTOR


class ApiServer:
    """The real ingest API (uvicorn) in a subprocess, with the environment given."""

    def __init__(self, port: int, env: dict, log_name: str):
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.env = env
        self.log_name = log_name
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        LOG_DIR.mkdir(parents=True, exist_ok=True)
        log = open(LOG_DIR / self.log_name, "ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "ingest_api"],  # as `make up` and the image start it: the server's limits too
            cwd=ROOT,
            env={**self.env, "API_HOST": "127.0.0.1", "API_PORT": str(self.port)},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        wait_for(lambda: httpx.get(self.url + "/healthz", timeout=1).status_code == 200, 60, "ingest API")

    def stop(self) -> None:
        stop_process(self.process)


@dataclass
class Customer:
    """A customer signed up and logged in over HTTP: `headers` carry its bearer token."""

    id: str
    username: str
    password: str
    token: str
    headers: dict = field(default_factory=dict)


def sign_up(client: httpx.Client, name: str = "c") -> Customer:
    """POST /customers and POST /auth/token, as a client does; a unique username from `name`."""
    username, password = f"{name}_{uuid.uuid4().hex[:10]}", f"pw-{uuid.uuid4().hex}"
    created = client.post("/customers", json={"username": username, "password": password})
    assert created.status_code == 201, created.text
    token = client.post("/auth/token", data={"username": username, "password": password})
    assert token.status_code == 200, token.text
    access = token.json()["access_token"]
    return Customer(created.json()["customer_id"], username, password, access, {"Authorization": f"Bearer {access}"})


def load_dag(dag_id: str):
    """The DAG as the DAG processor reads its file (dags/<dag_id>.py) now: settings from the environment
    of the moment, import errors raised."""
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(ROOT / "dags" / f"{dag_id}.py"))
    assert not bag.import_errors, bag.import_errors
    return bag.get_dag(dag_id)


class OutletEvents(dict):
    """What a task gets as `outlet_events` (an Asset -> its event, whose `extra` the task sets)."""

    def __missing__(self, key):
        self[key] = type("Event", (), {"extra": None})()
        return self[key]


def airflow_url(dsn: str) -> str:
    """A libpq DSN as the SQLAlchemy URL Airflow's metadata database setting takes (psycopg2 driver)."""
    from purchases.warehouse import sqlalchemy_url

    return sqlalchemy_url(dsn).replace("postgresql+psycopg://", "postgresql+psycopg2://", 1)


def prepare_warehouse(dsn: str) -> str:
    """A warehouse as `make up` makes one: the database, its migrations, every part's role and grants (the
    passwords from the settings of the environment: tests/conftest.py sets them). Returns `dsn`."""
    from purchases.roles import setup_warehouse

    return setup_warehouse(dsn)


def warehouse_environment(dsn: str) -> dict[str, str]:
    """What points the pipeline's programs at the warehouse `dsn` (owner's): WAREHOUSE_DSN, the Airflow
    connections of the parts' roles and dbt's profile variables, derived as scripts/env.sh derives them."""
    from purchases.settings import Settings, exports

    settings = Settings(WAREHOUSE_DSN=dsn)
    derived = exports(settings, {})
    keep = ("WAREHOUSE_DSN", "AIRFLOW_CONN_WAREHOUSE", "AIRFLOW_CONN_WAREHOUSE_GATE", "AIRFLOW_CONN_WAREHOUSE_DBT")
    return {name: value for name, value in derived.items() if name in keep or name.startswith("DBT_")}


def pass_quality_gate(conn) -> None:
    """What the loader and the quality gate do for rows a test put into staging by hand: give them one batch
    that the gate passed (staging.loaded_batches), so that the marts read them."""
    conn.execute("""with batch as (insert into staging.loaded_batches (kind, kafka_topic, loaded, checked_at)
                                   values ('test', 'purchases', 0, clock_timestamp()) returning batch_id)
                    update staging.purchase_events set batch_id = (select batch_id from batch)
                    where batch_id is null""")
