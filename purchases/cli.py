"""Small operational commands used by `make up` and `make down` (python -m purchases.cli --help)."""

from __future__ import annotations

import argparse
import os
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

    unfinished = [
        TaskInstanceState.RUNNING,
        TaskInstanceState.QUEUED,
        TaskInstanceState.RESTARTING,
        TaskInstanceState.DEFERRED,
    ]
    with create_session() as session:
        tasks = session.query(TaskInstance).filter(TaskInstance.state.in_(unfinished)).all()
        for ti in tasks:
            ti.state = TaskInstanceState.FAILED
        runs = session.query(DagRun).filter(DagRun.state.in_([DagRunState.RUNNING, DagRunState.QUEUED])).all()
        for run in runs:
            run.state = DagRunState.FAILED
    if tasks or runs:
        print(f"marked {len(runs)} interrupted DAG runs and {len(tasks)} task instances failed")


def run_drain(settings, timeout: float, check_only: bool) -> None:
    import logging

    from confluent_kafka import KafkaException

    from purchases import drain

    # The loader's per-batch lines would drown what the drain says; its warnings still show.
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    topic = settings.purchases_topic
    if check_only:
        try:
            pending = drain.check(
                settings.kafka_bootstrap_servers, settings.dsn_as("loader"), topic, timeout=max(1.0, min(timeout, 10.0))
            )
        except (KafkaException, TimeoutError, KeyError) as exc:
            sys.exit(f"cannot tell what the broker at {settings.kafka_bootstrap_servers} holds: {exc!r}")
        if pending:
            print(
                f"{drain.count(pending)} of {topic} are in the broker but not in staging (lost if it "
                f"stops now): {drain.describe(topic, pending)}"
            )
        else:
            print(f"staging holds every record of {topic} the broker has")
        return
    try:
        drain.drain(
            settings.kafka_bootstrap_servers,
            settings.dsn_as("loader"),  # the loader's role: what the drain does is loading
            topic,
            timeout,
            say=lambda line: print(line, flush=True),
        )
    except drain.DrainFailed as exc:
        sys.exit(str(exc))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m purchases.cli")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("bootstrap-warehouse", help="create the warehouse database and migrate its schemas")
    commands.add_parser("bootstrap-airflow-database", help="create Airflow's metadata database if missing")
    topic = commands.add_parser("ensure-topic", help="create the purchases topic if missing")
    topic.add_argument("--timeout", type=float, default=30)
    port = commands.add_parser("wait-port", help="wait until something listens on host:port")
    port.add_argument("address")
    port.add_argument("--timeout", type=float, default=60)
    commands.add_parser("broker", help="run the embedded broker in the foreground")
    drain = commands.add_parser(
        "drain",
        help="load every partition of the topic into staging up to its log end (before the in-memory "
        "broker stops); fails, saying what is not loaded, if it cannot within the timeout",
    )
    drain.add_argument(
        "--timeout",
        type=float,
        default=get_settings().drain_timeout_seconds,
        help="seconds to wait at most (default: DRAIN_TIMEOUT_SECONDS or 120)",
    )
    drain.add_argument(
        "--check", action="store_true", help="only say what the broker holds that staging does not; load nothing"
    )
    commands.add_parser(
        "fail-interrupted-runs",
        help="mark Airflow runs left running by a stopped stack as failed (before it starts again)",
    )
    args = parser.parse_args(argv)
    settings = get_settings()

    if args.command == "bootstrap-warehouse":
        from purchases.warehouse import bootstrap

        bootstrap(settings.warehouse_dsn)
    elif args.command == "bootstrap-airflow-database":
        from purchases.warehouse import ensure_database, keep_private

        airflow_dsn = settings.airflow_database_url.replace("postgresql+psycopg2://", "postgresql://", 1)
        ensure_database(airflow_dsn)
        keep_private(airflow_dsn)
    elif args.command == "ensure-topic":
        from purchases.broker import ensure_topic

        deadline = time.monotonic() + args.timeout
        while True:
            try:
                count = ensure_topic(
                    settings.kafka_bootstrap_servers, settings.purchases_topic, settings.purchases_partitions
                )
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
    elif args.command == "drain":
        run_drain(settings, args.timeout, args.check)
    elif args.command == "broker":
        from purchases.broker import embedded_broker_command

        host, _, number = settings.kafka_bootstrap_servers.split(",")[0].rpartition(":")
        command = embedded_broker_command(host, int(number))
        os.execv(command[0], command)


if __name__ == "__main__":
    main()
