"""Small operational commands used by `make up` and `make down` (python -m purchases.cli --help)."""
from __future__ import annotations

import argparse
import socket
import sys
import time

from purchases.settings import get_settings


def wait_for_port(host: str, port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection((host, port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                sys.exit(f"nothing listens on {host}:{port} after {timeout:.0f} s")
            time.sleep(0.3)


def fail_interrupted_runs() -> None:
    """A stopped stack leaves its runs 'running'; the continuous loader (one active run) would wait for the
    scheduler's heartbeat timeout, minutes, before starting again. Their processes are gone: say so now."""
    from airflow.models import DagRun, TaskInstance
    from airflow.utils.session import create_session
    from airflow.utils.state import DagRunState, TaskInstanceState

    unfinished = [TaskInstanceState.RUNNING, TaskInstanceState.QUEUED, TaskInstanceState.RESTARTING,
                  TaskInstanceState.DEFERRED]
    with create_session() as session:
        tasks = session.query(TaskInstance).filter(TaskInstance.state.in_(unfinished)).all()
        for ti in tasks:
            ti.state = TaskInstanceState.FAILED
        runs = session.query(DagRun).filter(DagRun.state.in_([DagRunState.RUNNING, DagRunState.QUEUED])).all()
        for run in runs:
            run.state = DagRunState.FAILED
    if tasks or runs:
        print(f"marked {len(runs)} interrupted DAG runs and {len(tasks)} task instances failed")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m purchases.cli")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("bootstrap-warehouse", help="create the warehouse database and its tables")
    topic = commands.add_parser("ensure-topic", help="create the purchases topic if missing")
    topic.add_argument("--timeout", type=float, default=30)
    port = commands.add_parser("wait-port", help="wait until something listens on host:port")
    port.add_argument("address")
    port.add_argument("--timeout", type=float, default=60)
    commands.add_parser("broker", help="run the embedded broker in the foreground")
    commands.add_parser("fail-interrupted-runs",
                        help="mark Airflow runs left running by a stopped stack as failed (before it starts again)")
    args = parser.parse_args(argv)
    settings = get_settings()

    if args.command == "bootstrap-warehouse":
        from purchases.warehouse import bootstrap

        bootstrap(settings.warehouse_dsn)
    elif args.command == "ensure-topic":
        from purchases.broker import ensure_topic

        deadline = time.monotonic() + args.timeout
        while True:
            try:
                count = ensure_topic(settings.kafka_bootstrap_servers, settings.purchases_topic,
                                     settings.purchases_partitions)
                print(f"topic {settings.purchases_topic}: {count} partitions")
                return
            except Exception as exc:  # noqa: BLE001 - the broker may still be starting
                if time.monotonic() > deadline:
                    sys.exit(f"cannot create topic {settings.purchases_topic}: {exc}")
                time.sleep(1)
    elif args.command == "wait-port":
        host, _, number = args.address.rpartition(":")
        wait_for_port(host, int(number), args.timeout)
    elif args.command == "fail-interrupted-runs":
        fail_interrupted_runs()
    elif args.command == "broker":
        import os

        from purchases.broker import embedded_broker_command

        host, _, number = settings.kafka_bootstrap_servers.split(",")[0].rpartition(":")
        command = embedded_broker_command(host, int(number))
        os.execv(command[0], command)


if __name__ == "__main__":
    main()
