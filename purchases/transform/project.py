"""Where the dbt project and its artifacts are, and running dbt on it (a process, or in this process).

The paths are settings (purchases.settings: DBT_PROJECT_DIR, DBT_PROFILES_DIR, DBT_MANIFEST_PATH,
DBT_DOCS_DIR), read when asked, so a test or a benchmark that points them elsewhere is followed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from purchases.settings import Settings


def project_dir() -> Path:
    return Settings().dbt_project_dir


def profiles_dir() -> Path:
    return Settings().profiles_dir


def manifest_path() -> Path:
    """The manifest Cosmos renders the DAG from (LoadMode.DBT_MANIFEST: no `dbt ls` at DAG parse time).
    Not target/manifest.json, which every dbt command rewrites in place while the DAG processor may read."""
    return Settings().manifest_path


def docs_dir() -> Path:
    """Where the docs page lives: one self-contained index.html (`dbt docs generate --static`)."""
    return Settings().docs_dir


def dbt_executable() -> Path:
    """dbt from the same virtualenv as this interpreter (Airflow and dbt share .venv)."""
    return Path(sys.executable).parent / "dbt"


def replace_atomically(source: Path, destination: Path) -> None:
    """Readers (the DAG processor, the api-server) see the old file or the new one, never half of one."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=destination.parent, prefix=f".{destination.name}.", delete=False) as partial:
        with open(source, "rb") as complete:
            shutil.copyfileobj(complete, partial)
    os.chmod(partial.name, 0o644)
    os.replace(partial.name, destination)


def run_dbt(
    *args: str, target_path: Path | None = None, check: bool = True, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """Runs the dbt CLI on the project; raises with dbt's own output when it fails."""
    command = [str(dbt_executable()), *args, "--project-dir", str(project_dir()), "--profiles-dir", str(profiles_dir())]
    if target_path is not None:
        command += ["--target-path", str(target_path)]
    result = subprocess.run(
        command, cwd=project_dir(), env={**os.environ, **(env or {})}, capture_output=True, text=True
    )
    if check and result.returncode != 0:
        raise RuntimeError(
            f"`dbt {' '.join(args)}` failed (exit {result.returncode}):\n"
            f"{result.stdout[-6000:]}\n{result.stderr[-2000:]}"
        )
    return result


def invoke_dbt(*args: str, target_path: Path | None = None) -> None:
    """Runs a dbt command in this process (dbtRunner, as Cosmos does in the DAG's tasks): no interpreter
    start and dbt import per command. Raises with dbt's error when it fails."""
    from dbt.cli.main import dbtRunner

    command = [*args, "--project-dir", str(project_dir()), "--profiles-dir", str(profiles_dir())]
    if target_path is not None:
        command += ["--target-path", str(target_path)]
    outcome = dbtRunner().invoke(command)
    if not outcome.success:
        raise RuntimeError(f"`dbt {' '.join(args)}` failed: {outcome.exception or _failures(outcome.result)}")


def _failures(result: object) -> str:
    """The nodes that failed and dbt's message for each, not the whole result (pages of node configs)."""
    failed = [
        f"{r.node.name}: {r.message}"
        for r in getattr(result, "results", None) or []
        if str(getattr(r.status, "value", r.status)) in ("error", "fail", "runtime error")
    ]
    return "; ".join(failed) or str(result)[:2000]


def parse_project() -> Path:
    """`dbt parse` into a scratch target, then swap the manifest in. Needs no database."""
    with tempfile.TemporaryDirectory(prefix="dbt_parse_") as scratch:
        run_dbt("parse", target_path=Path(scratch))
        replace_atomically(Path(scratch) / "manifest.json", manifest_path())
    return manifest_path()
