"""`airflow celery worker`, started after importing what the scheduler preloads, as a machine of its own.

With the CeleryExecutor the scheduler forks no task: a worker does. Its main process forks its pool
processes (Celery's prefork pool, billiard) at start, each pool process runs the task supervisor, which
forks the task process (Airflow 3.3: BaseExecutor.run_workload -> supervise_task). So modules imported here,
before the worker starts, are loaded in every task, as purchases/scheduler.py gives the LocalExecutor's
tasks: dbt, Great Expectations, Cosmos, the loader (PRELOADED_MODULES, one list for both).

`--home DIR` makes the worker a machine of its own, sharing no written file with other workers or the
api-server: its Airflow home (config, pid file), temporary files (Cosmos' project copies and caches, dbt's
scratch targets), dbt's target and log paths, the dbt manifest it renders the transform DAG from, the working
copies of the dbt docs and the Data Docs (both published to the warehouse, purchases/pages.py), its task logs
and its working directory are under DIR. It reads the code, the DAGs and the dbt project from the checkout,
as a deployed image would. `--address` is the address it is known by: Airflow records it as the hostname of
the task instances it runs, and its log server (the api-server reads task logs from it) listens there only,
so that several workers on one machine each serve theirs on the same port (127.0.0.11, 127.0.0.12, ...: all
of 127.0.0.0/8 is this machine). Without these options it is an ordinary worker of its machine (the Docker
stack's `airflow-worker`).

Use: `python -m purchases.worker [--name NAME] [--home DIR] [--address ADDRESS] [airflow celery worker options]`
(scripts/up.sh with AIRFLOW_EXECUTOR=celery starts CELERY_WORKERS of them; docker-compose.yml's
airflow-worker).
"""

from __future__ import annotations

import argparse
import importlib
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

ADDRESS_ENV = "PURCHASES_WORKER_ADDRESS"


def address() -> str:
    """Airflow's [core] hostname_callable for a worker started with --address: the task instances it runs
    record this address, which the api-server fetches their logs from."""
    chosen = os.environ.get(ADDRESS_ENV)
    if chosen:
        return chosen
    from airflow.utils.net import getfqdn

    return getfqdn()


def own_directories(home: Path) -> dict[str, str]:
    """The environment that keeps everything the worker writes under `home`."""
    return {
        "AIRFLOW_HOME": str(home / "airflow"),
        "TMPDIR": str(home / "tmp"),
        "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(home / "logs"),
        "DBT_MANIFEST_PATH": str(home / "dbt" / "manifest.json"),
        "DBT_DOCS_DIR": str(home / "dbt" / "docs"),
        "DBT_TARGET_PATH": str(home / "dbt" / "target"),
        "DBT_LOG_PATH": str(home / "dbt" / "logs"),
        "GX_DATA_DOCS_DIR": str(home / "data_docs" / "staging_quality"),
    }


def _own_manifest(checkout_manifest: Path) -> None:
    """The manifest the transform DAG renders from, in the worker's own place: the checkout's (written by
    `make up`, baked into an image), copied with its time, which docs_are_due compares the docs page with;
    parsed anew when there is none. The docs task refreshes the worker's copy, never the checkout's."""
    from purchases.transform import manifest_path, parse_project

    own = manifest_path()
    if own.exists():
        return
    if checkout_manifest.exists():
        own.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(checkout_manifest, own)
    else:
        parse_project()


def _serve_logs(host: str) -> subprocess.Popen:
    """Airflow's log server (what `airflow celery worker` starts on every interface) on `host` only; it dies
    with the worker (PR_SET_PDEATHSIG)."""

    def die_with_parent() -> None:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG

    from airflow.configuration import conf

    port = conf.getint("logging", "worker_log_server_port")
    code = (
        "import uvicorn; uvicorn.run('airflow.utils.serve_logs.log_server:get_app', "
        f"host={host!r}, port={port}, log_level='warning', log_config=None, access_log=False)"
    )
    return subprocess.Popen([sys.executable, "-c", code], preexec_fn=die_with_parent)  # noqa: PLW1509 - only prctl


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m purchases.worker", description=__doc__.split("\n\n")[0])
    parser.add_argument("--name", help="the Celery worker's name (airflow celery worker --celery-hostname)")
    parser.add_argument("--home", type=Path, help="the worker's own directory: everything it writes goes there")
    parser.add_argument("--address", help="the address it is known by and serves its task logs on")
    args, airflow_args = parser.parse_known_args(argv)

    from purchases.settings import Settings

    checkout_manifest = Settings().manifest_path  # before --home moves it
    if args.home:
        home = args.home.resolve()
        os.environ.update(own_directories(home))
        for directory in ("airflow", "tmp", "logs", "dbt", "data_docs"):
            (home / directory).mkdir(parents=True, exist_ok=True)
        os.chdir(home)
    if args.address:
        os.environ[ADDRESS_ENV] = args.address
        os.environ["AIRFLOW__CORE__HOSTNAME_CALLABLE"] = "purchases.worker.address"
    _own_manifest(checkout_manifest)

    from purchases.scheduler import PRELOADED_MODULES

    for module in PRELOADED_MODULES:
        importlib.import_module(module)

    command = ["airflow", "celery", "worker"]
    if args.name:
        command += ["--celery-hostname", args.name]
    if args.address:
        _serve_logs(args.address)
        command.append("--skip-serve-logs")
    from airflow.__main__ import main as airflow_main

    sys.argv = [*command, *airflow_args]
    airflow_main()


if __name__ == "__main__":
    main()
