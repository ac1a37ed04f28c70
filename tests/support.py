"""Helpers the test folders share: free ports, waiting for readiness, and the real processes they start."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from purchases.processes import stop_process  # noqa: F401 - the tests import it from here

ROOT = Path(__file__).resolve().parents[1]
LOG_DIR = ROOT / "logs" / "tests"
# `make fuzz` sets this: the generated-input tests (hypothesis) then run FUZZ_FACTOR times their examples.
FUZZ_FACTOR = 25 if os.environ.get("HYPOTHESIS_PROFILE") == "fuzz" else 1


def examples(in_make_test: int) -> int:
    """How many generated examples a test runs: enough for `make test`'s time budget, more in `make fuzz`."""
    return in_make_test * FUZZ_FACTOR


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate, timeout: float, what: str, interval: float = 0.2):
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
            [sys.executable, "-m", "uvicorn", "ingest_api.main:app", "--host", "127.0.0.1", "--port", str(self.port),
             "--no-access-log"], cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        wait_for(lambda: httpx.get(self.url + "/healthz", timeout=1).status_code == 200, 60, "ingest API")

    def stop(self) -> None:
        stop_process(self.process)


def airflow_url(dsn: str) -> str:
    """A libpq DSN as the SQLAlchemy URL Airflow's metadata database setting takes (psycopg2 driver)."""
    from purchases.warehouse import sqlalchemy_url

    return sqlalchemy_url(dsn).replace("postgresql+psycopg://", "postgresql+psycopg2://", 1)


def pass_quality_gate(conn) -> None:
    """What the loader and the quality gate do for rows a test put into staging by hand: give them one batch
    that the gate passed (staging.loaded_batches), so that the marts read them."""
    conn.execute("""with batch as (insert into staging.loaded_batches (kind, kafka_topic, loaded, checked_at)
                                   values ('test', 'purchases', 0, clock_timestamp()) returning batch_id)
                    update staging.purchase_events set batch_id = (select batch_id from batch)
                    where batch_id is null""")
