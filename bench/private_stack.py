"""The real scripts/up.sh and scripts/down.sh on a stack private to its caller: its own free ports, warehouse
and Airflow databases, run, log, secrets and Airflow directories (and, on Celery, a Redis database of its
own, flushed after), beside a developer's `make up`.

Used by the Celery test (tests/test_celery.py) and by `make bench-executors` (bench/bench_executors.py).
"""

from __future__ import annotations

import os
import random
import secrets
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import psycopg

from purchases.processes import free_port
from purchases.settings import get_settings, postgres_url
from purchases.warehouse import sqlalchemy_url

ROOT = Path(__file__).resolve().parents[1]
LOG_DIR = ROOT / "logs" / "stacks"
REDIS = ("127.0.0.1", 6379)
# scripts/up.sh: worker N listens on 127.0.0.(10+N).
WORKER_ADDRESSES = {"worker-1": "127.0.0.11", "worker-2": "127.0.0.12"}


@dataclass(frozen=True)
class TaskTime:
    seconds: float  # from the task process's start to its end, as Airflow records it
    queued_seconds: float  # from queued (handed to the executor) to started
    hostname: str


def free_redis_database() -> int:
    import redis

    for number in random.sample(range(1, 16), 15):
        if redis.Redis(*REDIS, db=number).dbsize() == 0:
            return number
    raise RuntimeError("no empty Redis database (1-15) for the stack's Celery broker")


class PrivateStack:
    """scripts/up.sh and scripts/down.sh with an environment of the caller's own (`executor`: local or celery)."""

    def __init__(self, tmp: Path, name: str, executor: str = "local", **settings: str):
        self.name, self.started = name, time.monotonic()
        name = f"{name}_{secrets.token_hex(4)}"
        self.executor = executor
        self.ports = {
            key: free_port()
            for key in (
                "API_PORT",
                "AIRFLOW_PORT",
                "KAFKA_PORT",
                "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT",
                "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT",
            )
        }
        self.log_dir = LOG_DIR / name
        self.run_dir = tmp / "run"
        self.workers_dir = self.run_dir / "workers"
        server = get_settings().warehouse_dsn  # the developer's warehouse: its server is the one to use
        self.dsn = postgres_url(server, dbname=f"{name}_wh")
        self.airflow_dsn = postgres_url(server, dbname=f"{name}_af")
        # Only what the machine needs: the caller's settings (the tests' session puts its own broker,
        # warehouse and Airflow into os.environ) must not leak in, since scripts/env.sh honours whatever is set.
        keep = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "PYTHONPATH")
        self.env = {key: os.environ[key] for key in keep if key in os.environ}
        self.env.update({key: str(port) for key, port in self.ports.items() if key != "KAFKA_PORT"})
        self.env.update(
            {
                "WAREHOUSE_DSN": self.dsn,
                "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": sqlalchemy_url(self.airflow_dsn).replace(
                    "postgresql+psycopg://", "postgresql+psycopg2://", 1
                ),
                "KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{self.ports['KAFKA_PORT']}",
                "RUN_DIR": str(self.run_dir),
                "LOG_DIR": str(self.log_dir),
                "SECRETS_DIR": str(tmp / "secrets"),
                "AIRFLOW_HOME": str(tmp / "airflow"),
                "AIRFLOW_EXECUTOR": executor,
            }
        )
        self.redis_db = None
        if executor == "celery":
            self.redis_db = free_redis_database()
            self.env.update(
                {
                    "CELERY_WORKERS": str(len(WORKER_ADDRESSES)),
                    "AIRFLOW__CELERY__BROKER_URL": f"redis://{REDIS[0]}:{REDIS[1]}/{self.redis_db}",
                }
            )
        self.env.update(settings)
        self.api = f"http://127.0.0.1:{self.ports['API_PORT']}"
        self.airflow = f"http://127.0.0.1:{self.ports['AIRFLOW_PORT']}"
        self.timings: list[tuple[str, float]] = []

    def sh(self, command: str, timeout: float = 600, check: bool = True, **env: str) -> str:
        started = time.monotonic()
        done = subprocess.run(
            ["bash", "-c", f"source scripts/env.sh && {command}"],
            cwd=ROOT,
            env={**self.env, **env},
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        self.timings.append((command, time.monotonic() - started))
        output = done.stdout + done.stderr
        print(f"--- {command} ({time.monotonic() - started:.1f} s, rc {done.returncode})\n{output}")
        if check and done.returncode != 0:
            raise RuntimeError(f"{command} failed:\n{output}\n{self.log_tails()}")
        return output

    def up(self, **env: str) -> str:
        return self.sh("scripts/up.sh", **env)

    def down(self, check: bool = True, **env: str) -> str:
        return self.sh("scripts/down.sh", check=check, **env)

    def log_tails(self) -> str:
        tails = []
        for name in ("stack.log", *(f"{worker}.log" for worker in WORKER_ADDRESSES)):
            path = self.log_dir / name
            if path.exists():
                lines = [line for line in path.read_text().splitlines(True) if "Skipping registering" not in line]
                tails.append(f"{name} ends:\n" + "".join(lines[-25:]))
        return "\n".join(tails)

    def pid(self, name: str) -> int | None:
        path = self.run_dir / f"{name}.pid"
        return int(path.read_text()) if path.exists() else None

    def home(self, worker: str) -> Path:
        return self.workers_dir / worker

    def listening(self) -> list[int]:
        taken = []
        for port in self.ports.values():
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                taken.append(port)
            except OSError:
                pass
        return taken

    def airflow_rows(self, query: str, params=()) -> list[tuple]:
        with psycopg.connect(self.airflow_dsn) as conn:
            return conn.execute(query, params).fetchall()

    def warehouse_rows(self, query: str, params=()) -> list[tuple]:
        with psycopg.connect(self.dsn) as conn:
            return conn.execute(query, params).fetchall()

    def task_durations(self, dag_id: str, task_id: str, run_type: str | None = None) -> list[float]:
        """Seconds of each successful try of a task (of runs of `run_type` only, if given), oldest first."""
        return [row.seconds for row in self.task_times(dag_id, task_id, run_type)]

    def task_times(self, dag_id: str, task_id: str, run_type: str | None = None) -> list[TaskTime]:
        """Each successful try of a task: how long it ran, and how long it waited from queued to started."""
        rows = self.airflow_rows(
            "select t.duration, extract(epoch from t.start_date - t.queued_dttm)::float8, t.hostname "
            "from task_instance as t join dag_run as r using (dag_id, run_id) "
            "where t.dag_id = %s and t.task_id = %s and t.state = 'success' and r.run_type = coalesce(%s, r.run_type) "
            "order by t.start_date",
            (dag_id, task_id, run_type),
        )
        return [TaskTime(round(seconds, 2), round(waited or 0.0, 2), host) for seconds, waited, host in rows]

    def stop(self) -> None:
        """down, forced if it had to leave something running, and nothing of it kept; then how long each
        script took."""
        if self.pid("stack") or self.pid("broker") or list(self.run_dir.glob("worker-*.pid")):
            if "LEFT RUNNING" in self.down(check=False):
                self.down(check=False, FORCE="1")
        self.clean_up()
        print(
            f"{self.name}: {time.monotonic() - self.started:.0f} s in all; "
            + ", ".join(f"{command} {seconds:.0f} s" for command, seconds in self.timings)
        )

    def clean_up(self) -> None:
        from purchases.warehouse import drop_database

        for dsn in (self.dsn, self.airflow_dsn):
            drop_database(dsn)
        if self.redis_db is not None:
            import redis

            redis.Redis(*REDIS, db=self.redis_db).flushdb()
