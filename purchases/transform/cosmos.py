"""How the transform DAG runs dbt through Cosmos: one `dbt build` (watcher mode), a task per model and its
tests that reports on it, and a last task that makes the run's state honest."""

from __future__ import annotations

from typing import Any

from purchases.transform.project import dbt_executable, manifest_path, project_dir


def cosmos_task_group_args() -> dict[str, Any]:
    """Everything DbtTaskGroup needs, so the DAG file stays a few lines.

    Rendering reads the manifest: no dbt process at DAG parse time. `make up` (and the Airflow image's build)
    writes it with `dbt parse` before Airflow starts; without one the DAG shows an import error saying so.
    Watcher mode: one task runs a single `dbt build` of the whole project in-process (dbtRunner; each model
    with its tests, then what depends on it), and each model, seed and its tests get a light deferrable task
    that reports the result from that build. One task per model running its own dbt command (LOCAL mode)
    spent 10-20 s per task starting dbt on two cores: a run took 3-4 minutes instead of ~20 s.
    Unit tests check the SQL, not the data: `make test` runs them, scheduled runs leave them out.
    """
    from cosmos import (
        ExecutionConfig,
        ExecutionMode,
        InvocationMode,
        LoadMode,
        ProfileConfig,
        ProjectConfig,
        RenderConfig,
        SourceRenderingBehavior,
        TestBehavior,
    )
    from cosmos.profiles import PostgresUserPasswordProfileMapping

    from purchases.connections import DBT_CONN_ID
    from purchases.settings import Settings

    manifest = manifest_path()
    if not manifest.exists():
        raise FileNotFoundError(
            f"no dbt manifest at {manifest}: run `python -m purchases.transform parse` "
            f"(`make up` does; so does the Airflow image's build)"
        )
    window = "dbt_backfill_window(dag_run.run_type, data_interval_start, data_interval_end)"
    return {
        "project_config": ProjectConfig(
            dbt_project_path=project_dir(),
            manifest_path=manifest,
            install_dbt_deps=False,
            env_vars={"DBT_EXCLUDE_RESOURCE_TYPES": "unit_test"},
        ),
        # dbt's profile from the Airflow connection `warehouse_dbt` (dbt's own role), as Cosmos maps it: the DAG
        # needs no profiles.yml, and the connection is defined once with the others (AIRFLOW_CONN_*).
        "profile_config": ProfileConfig(
            profile_name="purchases",
            target_name="warehouse",
            profile_mapping=PostgresUserPasswordProfileMapping(
                conn_id=DBT_CONN_ID,
                profile_args={"schema": "marts", "threads": Settings().dbt_threads, "connect_timeout": 10},
            ),
        ),
        "execution_config": ExecutionConfig(
            execution_mode=ExecutionMode.WATCHER,
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
                # One build at a time across the DAG's runs (two may be active: the DAG file says why).
                "max_active_tis_per_dag": 1,
                "freshness_callback": report_stale_sources_without_pruning,
            },
        ),
        "render_config": RenderConfig(
            load_method=LoadMode.DBT_MANIFEST,
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
            source_rendering_behavior=SourceRenderingBehavior.WITH_TESTS_OR_FRESHNESS,
        ),
        "operator_args": {
            # The model tasks poll the build's progress from the triggerer; 2 s instead of the default 10 s
            # lets the run end, and the next one start, soon after the build does.
            "poke_interval": 2,
            # Templated per run: the backfill window of this run's data interval (empty when asset-triggered),
            # and which rows the data tests read: the increment in the runs new events trigger, every table
            # whole (and the reconciliations) in the daily, manual and backfill runs (dbt/macros/increment.sql).
            "vars": {
                "start_date": f"{{{{ {window}['start_date'] }}}}",
                "end_date": f"{{{{ {window}['end_date'] }}}}",
                "test_scope": "{{ 'increment' if dag_run.run_type == 'asset_triggered' else 'all' }}",
            },
        },
    }


def report_stale_sources_without_pruning(
    context: Any, dag: Any, task_group: Any, nodes: Any, sources_json: Any
) -> list[tuple[str, str]]:
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

    status = EmptyOperator(
        task_id=RUN_STATUS_TASK_ID,
        trigger_rule=TriggerRule.NONE_FAILED,
        doc_md="Failed (upstream_failed) when any task of the run failed, the `dbt build` "
        "task included; skipped tasks do not count.",
    )
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
