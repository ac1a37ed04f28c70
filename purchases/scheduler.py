"""`airflow scheduler`, started after importing the heavy libraries the pipeline's tasks use.

With the LocalExecutor every task runs in a process forked from this one (scheduler -> executor worker ->
task), so modules imported here are already loaded in each task. Without this, every task paid for its
own imports: on two cores Great Expectations took 8-15 s and dbt 7 s per task, which put half a minute of
CPU on the path from a loaded event to the spend total. The cost moves to the scheduler's start (once) and
to its memory, shared copy-on-write with the forks.

Use: `python -m purchases.scheduler [airflow scheduler options]` (Procfile, docker-compose.yml).
"""

from __future__ import annotations

import importlib
import sys

PRELOADED_MODULES = (
    "airflow.providers.postgres.hooks.postgres",
    "airflow.providers.apache.kafka.hooks.base",
    "cosmos",
    "dbt.cli.main",
    "dbt.adapters.postgres",
    "great_expectations",
    "purchases.load",
    "purchases.check.gate",
)


def main() -> None:
    from airflow.__main__ import main as airflow_main

    for module in PRELOADED_MODULES:
        importlib.import_module(module)
    sys.argv = ["airflow", "scheduler", *sys.argv[1:]]
    airflow_main()


if __name__ == "__main__":
    main()
