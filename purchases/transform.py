"""The dbt side of the pipeline: where the project is, how the Airflow DAG configures Cosmos, backfill windows,
and the two artifacts built outside dbt runs (the manifest Cosmos renders from, the docs the UI shows).

`python -m purchases.transform parse` writes dbt/target/cosmos/manifest.json (run it before the DAG processor
starts: `make up`); `docs` regenerates the dbt docs page; `build` runs `dbt build` once.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from datetime import date, datetime, time, timedelta, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def project_dir() -> Path:
    return Path(os.environ.get("DBT_PROJECT_DIR") or ROOT / "dbt")


def profiles_dir() -> Path:
    return Path(os.environ.get("DBT_PROFILES_DIR") or project_dir())


def manifest_path() -> Path:
    """The manifest Cosmos renders the DAG from (LoadMode.DBT_MANIFEST: no `dbt ls` at DAG parse time).
    Not target/manifest.json, which every dbt command rewrites in place while the DAG processor may read."""
    return Path(os.environ.get("DBT_MANIFEST_PATH") or project_dir() / "target" / "cosmos" / "manifest.json")


def docs_dir() -> Path:
    """Where the docs page lives: one self-contained index.html (`dbt docs generate --static`)."""
    return Path(os.environ.get("DBT_DOCS_DIR") or project_dir() / "target" / "docs")


def dbt_executable() -> Path:
    """dbt from the same virtualenv as this interpreter (Airflow and dbt share .venv)."""
    return Path(sys.executable).parent / "dbt"


def _replace_atomically(source: Path, destination: Path) -> None:
    """Readers (the DAG processor, the api-server) see the old file or the new one, never half of one."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=destination.parent, prefix=f".{destination.name}.",
                                     delete=False) as partial:
        with open(source, "rb") as complete:
            shutil.copyfileobj(complete, partial)
    os.chmod(partial.name, 0o644)
    os.replace(partial.name, destination)


def run_dbt(*args: str, target_path: Path | None = None, check: bool = True,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Runs the dbt CLI on the project; raises with dbt's own output when it fails."""
    command = [str(dbt_executable()), *args, "--project-dir", str(project_dir()),
               "--profiles-dir", str(profiles_dir())]
    if target_path is not None:
        command += ["--target-path", str(target_path)]
    result = subprocess.run(command, cwd=project_dir(), env={**os.environ, **(env or {})},
                            capture_output=True, text=True)
    if check and result.returncode != 0:
        raise RuntimeError(f"`dbt {' '.join(args)}` failed (exit {result.returncode}):\n"
                           f"{result.stdout[-6000:]}\n{result.stderr[-2000:]}")
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
        raise RuntimeError(f"`dbt {' '.join(args)}` failed: {outcome.exception or outcome.result}")


def parse_project() -> Path:
    """`dbt parse` into a scratch target, then swap the manifest in. Needs no database."""
    with tempfile.TemporaryDirectory(prefix="dbt_parse_") as scratch:
        run_dbt("parse", target_path=Path(scratch))
        _replace_atomically(Path(scratch) / "manifest.json", manifest_path())
    return manifest_path()


def manifest_is_stale() -> bool:
    """True when the manifest is missing or older than a file of the project (a stat walk, no parsing)."""
    try:
        built = manifest_path().stat().st_mtime
    except FileNotFoundError:
        return True
    for folder in ("models", "macros", "seeds", "tests", "snapshots", "analyses"):
        for path in (project_dir() / folder).rglob("*"):
            if path.suffix in (".sql", ".yml", ".yaml", ".csv", ".md") and path.stat().st_mtime > built:
                return True
    return (project_dir() / "dbt_project.yml").stat().st_mtime > built


def generate_docs() -> Path:
    """`dbt docs generate --static` (needs the warehouse for the catalog); publishes index.html and
    refreshes the manifest Cosmos renders from, so a changed project shows up in the DAG after one run."""
    with tempfile.TemporaryDirectory(prefix="dbt_docs_") as scratch:
        invoke_dbt("docs", "generate", "--static", target_path=Path(scratch))
        # Manifest first: docs_are_due() reads a page older than the manifest as out of date.
        _replace_atomically(Path(scratch) / "manifest.json", manifest_path())
        _replace_atomically(Path(scratch) / "static_index.html", docs_dir() / "index.html")
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


# --- backfill windows ------------------------------------------------------------------------------------

def _utc_day(moment: datetime, *, round_up: bool) -> date:
    moment = moment.astimezone(timezone.utc)
    day = moment.date()
    if round_up and moment.time() != time(0):
        day += timedelta(days=1)
    return day


def backfill_window(run_type: Any, data_interval_start: datetime | None,
                    data_interval_end: datetime | None) -> dict[str, str]:
    """dbt vars for a DAG run: the UTC days its data interval covers, or none for an asset-triggered run.

    Scheduled, manual and backfill runs rebuild exactly the days of their data interval (a daily run
    re-checks the day that just ended); runs triggered by newly loaded events only do the incremental work.
    """
    run_type = getattr(run_type, "value", run_type)
    if run_type == "asset_triggered" or data_interval_start is None or data_interval_end is None:
        return {"start_date": "", "end_date": ""}
    start = _utc_day(data_interval_start, round_up=False)
    end = _utc_day(data_interval_end, round_up=True)
    if end <= start:  # an empty interval still means "the day it is in"
        end = start + timedelta(days=1)
    return {"start_date": start.isoformat(), "end_date": end.isoformat()}


# --- Cosmos -----------------------------------------------------------------------------------------------

def cosmos_task_group_args() -> dict[str, Any]:
    """Everything DbtTaskGroup needs, so the DAG file stays a few lines.

    Rendering reads the manifest (no dbt process at DAG parse time). If it is missing or older than the
    project's files (a fresh checkout, an edited model) it is rewritten once by `dbt parse`, which needs
    no database; `make up` runs that parse before Airflow starts.
    Watcher mode: one task runs a single `dbt build` of the whole project in-process (dbtRunner; each model
    with its tests, then what depends on it), and each model, seed and its tests get a light deferrable task
    that reports the result from that build. One task per model running its own dbt command (LOCAL mode)
    spent 10-20 s per task starting dbt on two cores: a run took 3-4 minutes instead of ~20 s.
    Unit tests check the SQL, not the data: `make test` runs them, scheduled runs leave them out.
    """
    from cosmos import (ExecutionConfig, ExecutionMode, InvocationMode, LoadMode, ProfileConfig,
                        ProjectConfig, RenderConfig, SourceRenderingBehavior, TestBehavior)

    if manifest_is_stale():
        parse_project()
    window = "dbt_backfill_window(dag_run.run_type, data_interval_start, data_interval_end)"
    return {
        "project_config": ProjectConfig(dbt_project_path=project_dir(), manifest_path=manifest_path(),
                                        install_dbt_deps=False,
                                        env_vars={"DBT_EXCLUDE_RESOURCE_TYPES": "unit_test"}),
        "profile_config": ProfileConfig(profile_name="purchases", target_name="warehouse",
                                        profiles_yml_filepath=profiles_dir() / "profiles.yml"),
        "execution_config": ExecutionConfig(execution_mode=ExecutionMode.WATCHER,
                                            invocation_mode=InvocationMode.DBT_RUNNER,
                                            dbt_executable_path=str(dbt_executable()),
                                            # Arguments of the `dbt build` task (the producer) only.
                                            setup_operator_args={
                                                # No Airflow retry: Cosmos never builds on a second try,
                                                # it skips ("Dbt WATCHER producer task does not support
                                                # Airflow retries"). With the DAG's `retries: 1` a failed
                                                # build ended *skipped* 30 s later, a skip fails nothing
                                                # downstream of it, and a failed run showed green. Without
                                                # one, the build task stays failed and so does the run
                                                # (end_with_the_run_status). The retries that remain, and
                                                # why: dags/purchases_transform.py.
                                                "retries": 0,
                                                "freshness_callback": report_stale_sources_without_pruning,
                                            }),
        "render_config": RenderConfig(load_method=LoadMode.DBT_MANIFEST,
                                      # The build runs each model's data tests right after it (a failure stops
                                      # what depends on the model); a task per model's tests shows the result.
                                      test_behavior=TestBehavior.AFTER_EACH,
                                      enable_mock_profile=False,
                                      # Tests reading several models (relationships, reconciliations) get a
                                      # task of their own after all of them, not inside the first one's.
                                      should_detach_multiple_parents_tests=True,
                                      # `dbt source freshness` of the loader's table before the models; its
                                      # task shows the result, the build leaves nothing out for it (see
                                      # report_stale_sources_without_pruning).
                                      source_rendering_behavior=SourceRenderingBehavior.WITH_TESTS_OR_FRESHNESS),
        "operator_args": {
            # The model tasks poll the build's progress from the triggerer; 2 s instead of the default 10 s
            # lets the run end, and the next one start, soon after the build does.
            "poke_interval": 2,
            # Templated per run: the backfill window of this run's data interval (empty when asset-triggered).
            "vars": {"start_date": "{{ %s['start_date'] }}" % window, "end_date": "{{ %s['end_date'] }}" % window},
        },
    }


def report_stale_sources_without_pruning(context: Any, dag: Any, task_group: Any, nodes: Any,
                                         sources_json: Any) -> list[tuple[str, str]]:
    """Cosmos' `freshness_callback` for the build task: a stale source is reported, nothing is left out.

    The build task runs `dbt source freshness` first and pushes each source's result; the source's task
    reports it (a `warn` is in its log, the task succeeds). Cosmos' default callback then
    (`_default_freshness_callback`, cosmos/operators/watcher.py) marks "skipped", and `--exclude`s from
    `dbt build`, every model all of whose parents are stale sources or models so left out. The loader's
    table warns after 24 h without a load, and when it is empty. Observed on the first run after a fresh
    `make up` (tests/dbt/test_transform_run_status.py reproduces it): stg_purchase_events and
    customer_purchases were left out, customer_spend (it also reads the seed, a fresh parent) was built
    anyway and failed on "relation marts.customer_purchases does not exist", and the tasks after it were
    skipped. A quiet shop would break every run the same way. A run with nothing new is cheap (the models are
    incremental), so nothing is pruned: the (unique_id, state) pairs returned are the nodes to pre-set and
    exclude, here none.
    """
    return []


RUN_STATUS_TASK_ID = "run_status"


def end_with_the_run_status(group: Any, *others: Any) -> Any:
    """Adds the DAG's last task, `run_status`: an EmptyOperator directly downstream of every task of the
    watcher-mode group (the `dbt build` task included) and of `others`, with trigger rule none_failed.

    Airflow decides a run's state from its leaves alone, and this is the only one: it is upstream_failed,
    and the run failed, when any of those tasks failed or was upstream_failed; it succeeds when each one
    succeeded or was skipped. It sees the build task itself, which has no retry: a failed build fails the
    run whatever the tasks after it do (a model task's retry runs its model alone and may succeed).
    Before, the last word was regenerate_dbt_docs' (trigger rule all_success), which a failure had to reach
    task by task (via Cosmos' dbt_producer_watcher_done gate, or a failed model's task and the tasks after
    it), while an all_success task is *skipped* as soon as one upstream task is skipped, before the others
    end (TriggerRuleDep), and a skipped leaf counts as a success: observed, a failed build whose model tasks
    were skipped ended green. The docs task's own `run_if` skip (docs not due) only happens when everything
    before it succeeded, and none_failed accepts it. A skipped build task (a cleared run: Cosmos skips its
    second try and each model task runs its own model) counts neither way: the model tasks' results do.
    The scheduler settles an EmptyOperator without starting a process, so it costs nothing per run.
    """
    from airflow.providers.standard.operators.empty import EmptyOperator
    from airflow.task.trigger_rule import TriggerRule

    status = EmptyOperator(task_id=RUN_STATUS_TASK_ID, trigger_rule=TriggerRule.NONE_FAILED,
                           doc_md="Failed (upstream_failed) when any task of the run failed, the `dbt build` "
                                  "task included; skipped tasks do not count.")
    for task in [*group.iter_tasks(), *others]:
        task >> status
    return status


def report_after_the_build(group: Any) -> None:
    """Starts each model's task of a watcher-mode DbtTaskGroup when the `dbt build` task has ended, instead
    of alongside it. Started alongside, each one waits for its model by deferring to the triggerer and then
    resumes in a second process: two task starts per model, on two cores, while the build needs the CPU.
    Started after, each reads its model's result at once and ends. The roots run whatever the build's outcome
    (all_done), so a failed model's task reports the failure. `dag.test()`, which runs one task at a time,
    needs this order too: a model's task started first would wait for a build that never starts.
    The spend totals are not delayed: the build writes the tables, these tasks only report."""
    from airflow.task.trigger_rule import TriggerRule
    from cosmos.operators.watcher import DbtProducerWatcherOperator

    tasks = list(group.iter_tasks())
    build = next(task for task in tasks if isinstance(task, DbtProducerWatcherOperator))
    for task in tasks:
        if task is not build and not task.upstream_task_ids:
            build >> task
            task.trigger_rule = TriggerRule.ALL_DONE


DAG_MACROS = {"dbt_backfill_window": backfill_window}


def _main() -> None:
    parser = argparse.ArgumentParser(prog="python -m purchases.transform", description=__doc__)
    parser.add_argument("command", choices=["parse", "docs", "build"])
    parser.add_argument("dbt_args", nargs="*", help="extra arguments for `build`")
    args = parser.parse_args()
    if args.command == "parse":
        print(parse_project())
    elif args.command == "docs":
        print(generate_docs())
    else:
        result = run_dbt("build", *args.dbt_args, check=False)
        print(result.stdout, end="")
        print(result.stderr, end="", file=sys.stderr)
        sys.exit(result.returncode)


if __name__ == "__main__":
    _main()
