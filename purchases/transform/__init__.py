"""Transform: staging -> marts with dbt (the project in dbt/), run by Airflow through Cosmos.

`project` finds the project and runs dbt; `cosmos` configures the DAG's task group; `backfill` turns a DAG
run's data interval into the days to rebuild; `docs` keeps the docs page the Airflow UI shows.
"""

from purchases.transform.backfill import DAG_MACROS, backfill_window
from purchases.transform.docs import docs_are_due, generate_docs
from purchases.transform.project import docs_dir, manifest_path, parse_project, project_dir, run_dbt

__all__ = [
    "DAG_MACROS",
    "backfill_window",
    "docs_are_due",
    "docs_dir",
    "generate_docs",
    "manifest_path",
    "parse_project",
    "project_dir",
    "run_dbt",
]
