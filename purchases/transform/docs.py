"""The dbt docs page the Airflow UI shows (plugins/dbt_docs_plugin.py), and when it is regenerated.

The page is published to the warehouse (`pages.dbt_docs`, purchases/pages.py) as dbt's role, so the
api-server serves it whichever machine (a Celery worker) generated it; a copy stays in DBT_DOCS_DIR on that
machine.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from purchases.transform.project import docs_dir, invoke_dbt, manifest_path, replace_atomically

SITE = "dbt_docs"
PAGE = "index.html"


def dbt_dsn() -> str:
    """The warehouse as dbt's role: the Airflow connection `warehouse_dbt` (AIRFLOW_CONN_WAREHOUSE_DBT), the one
    Cosmos maps to dbt's profile, in a task and by hand alike."""
    from purchases.connections import DBT_CONN_ID, warehouse_dsn

    return warehouse_dsn(DBT_CONN_ID)


def generate_docs() -> Path:
    """`dbt docs generate --static` (needs the warehouse for the catalog); publishes index.html and
    refreshes the manifest Cosmos renders from, so a changed project shows up in the DAG after one run."""
    from purchases import pages

    with tempfile.TemporaryDirectory(prefix="dbt_docs_") as scratch:
        invoke_dbt("docs", "generate", "--static", target_path=Path(scratch))
        # Manifest first: docs_are_due() reads a page older than the manifest as out of date.
        replace_atomically(Path(scratch) / "manifest.json", manifest_path())
        page = Path(scratch) / "static_index.html"
        pages.publish(dbt_dsn(), SITE, {PAGE: page.read_bytes()})
        replace_atomically(page, docs_dir() / PAGE)  # this machine's copy
    return docs_dir() / PAGE


def docs_are_due(run_type: Any) -> bool:
    """Scheduled, manual and backfill runs regenerate the docs; the frequent runs triggered by newly loaded
    events only do so when the published page is missing or older than the manifest (the project changed).
    `dbt docs generate` queries the catalog and takes longer than an incremental build."""
    if getattr(run_type, "value", run_type) != "asset_triggered":
        return True
    from purchases import pages

    published = pages.updated_at(dbt_dsn(), SITE, PAGE)
    try:
        return published is None or published.timestamp() < manifest_path().stat().st_mtime
    except FileNotFoundError:
        return True
