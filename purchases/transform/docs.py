"""The dbt docs page the Airflow UI shows (plugins/dbt_docs_plugin.py), and when it is regenerated."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from purchases.transform.project import docs_dir, invoke_dbt, manifest_path, replace_atomically


def generate_docs() -> Path:
    """`dbt docs generate --static` (needs the warehouse for the catalog); publishes index.html and
    refreshes the manifest Cosmos renders from, so a changed project shows up in the DAG after one run."""
    with tempfile.TemporaryDirectory(prefix="dbt_docs_") as scratch:
        invoke_dbt("docs", "generate", "--static", target_path=Path(scratch))
        # Manifest first: docs_are_due() reads a page older than the manifest as out of date.
        replace_atomically(Path(scratch) / "manifest.json", manifest_path())
        replace_atomically(Path(scratch) / "static_index.html", docs_dir() / "index.html")
    return docs_dir() / "index.html"


def docs_are_due(run_type: Any) -> bool:
    """Scheduled, manual and backfill runs regenerate the docs; the frequent runs triggered by newly loaded
    events only do so when the page is missing or older than the manifest (the project changed).
    `dbt docs generate` queries the catalog and takes longer than an incremental build."""
    if getattr(run_type, "value", run_type) != "asset_triggered":
        return True
    try:
        return (docs_dir() / "index.html").stat().st_mtime < manifest_path().stat().st_mtime
    except FileNotFoundError:
        return True
