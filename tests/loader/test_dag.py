"""The real DAGs, run with dag.test(): mapped loads per partition, the Asset events, the quality gate."""

from __future__ import annotations

import json
import time
from datetime import UTC

import pytest
from support import OutletEvents, load_dag

from .helpers import create_topic, make_event, produce


def task_states(dag_run) -> dict[str, list[str]]:
    states: dict[str, list[str]] = {}
    for ti in dag_run.get_task_instances():
        states.setdefault(ti.task_id, []).append(str(ti.state))
    return states


def asset_events(name: str, since) -> list[dict]:
    from airflow import settings
    from airflow.models.asset import AssetEvent, AssetModel

    with settings.Session() as session:
        rows = (
            session.query(AssetEvent)
            .join(AssetModel, AssetEvent.asset_id == AssetModel.id)
            .filter(AssetModel.name == name, AssetEvent.timestamp >= since)
            .all()
        )
        return [row.extra for row in rows]


def delete_dag_run(dag_run) -> None:
    """A failed purchases_quality run holds every later one (depends_on_past): tests must not leave one."""
    from airflow import settings
    from airflow.models.dagrun import DagRun

    with settings.Session() as session:
        session.query(DagRun).filter(DagRun.id == dag_run.id).delete()
        session.commit()


@pytest.fixture
def dag_topic(broker, monkeypatch):
    topic = create_topic(broker.bootstrap, partitions=2)
    monkeypatch.setenv("PURCHASES_TOPIC", topic)
    return topic


@pytest.fixture
def gate_caught_up(warehouse_dsn):
    """The gate has passed every batch other tests of this database loaded: what a test's gate run checks is
    its own. Batches a test leaves failing are passed afterwards, so they hold back no later test."""
    import psycopg

    def catch_up():
        with psycopg.connect(warehouse_dsn, autocommit=True) as conn:
            conn.execute("update staging.loaded_batches set checked_at = now() where checked_at is null")

    catch_up()
    yield
    catch_up()


def test_ingest_dag_loads_every_partition_then_the_gate_passes_the_batches_and_releases_the_asset(
    airflow_db, broker, warehouse_dsn, dag_topic, customers, gate_caught_up, monkeypatch, tmp_path
):
    from datetime import datetime

    from .helpers import Staged

    monkeypatch.setenv("GX_DATA_DOCS_DIR", str(tmp_path / "docs"))
    started = datetime.now(UTC)
    staged = Staged(warehouse_dsn, dag_topic)
    events = {p: [make_event(customers[0], n) for n in range(20 + p)] for p in (0, 1)}
    for partition, batch in events.items():
        produce(broker.bootstrap, dag_topic, [(None, e.to_bytes()) for e in batch], partition=partition)

    run = load_dag("purchases_ingest").test(run_conf={"window_seconds": 3})

    assert str(run.state) == "success", task_states(run)
    assert task_states(run) == {
        "partitions": ["success"],
        "load": ["success", "success"],
        "announce": ["success"],
        "every_partition_loaded": ["success"],
    }
    assert staged.count() == 41
    [extra] = asset_events("staging_purchase_events_loaded", started)
    assert (extra["loaded"], extra["partitions"]) == (41, {"0": 20, "1": 21})
    assert staged.passed() == 0  # loaded, not yet passed by the gate: the marts cannot read them

    gate = load_dag("purchases_quality").test()
    assert task_states(gate) == {"quality_gate": ["success"]}
    [passed] = asset_events("staging_purchase_events", started)
    assert passed["rows"] == 41
    assert staged.passed() == 41
    assert (tmp_path / "docs" / "index.html").exists()
    assert list((tmp_path / "docs" / "validations").rglob("*.html"))

    # A second run finds nothing new and no batch waits: no Asset event, the gate and the transform stay idle.
    again = load_dag("purchases_ingest").test(run_conf={"window_seconds": 1})
    assert task_states(again)["announce"] == ["skipped"]
    assert len(asset_events("staging_purchase_events_loaded", started)) == 1


def test_rows_a_failed_load_task_committed_still_reach_the_gate(
    airflow_db, broker, warehouse_dsn, topic, customers, gate_caught_up
):
    """A load task that committed batches and then failed returns no result; announce finds its batches in
    the warehouse all the same, and the gate checks them."""
    from datetime import datetime

    from purchases.assets import STAGING_PURCHASE_EVENTS_LOADED
    from purchases.load import LoaderConfig, load_partition
    from purchases.load.tasks import announce

    started = datetime.now(UTC)
    produce(broker.bootstrap, topic, [(None, make_event(customers[1], n).to_bytes()) for n in range(5)])
    load_partition(LoaderConfig(broker.bootstrap, warehouse_dsn, topic), 0, window_seconds=30, stop_when_idle=True)

    outlets = OutletEvents()
    assert announce([None, None], outlets, STAGING_PURCHASE_EVENTS_LOADED)["loaded"] == 0
    assert outlets[STAGING_PURCHASE_EVENTS_LOADED].extra is not None

    run = load_dag("purchases_quality").test()
    assert task_states(run) == {"quality_gate": ["success"]}
    [passed] = asset_events("staging_purchase_events", started)
    assert passed["rows"] == 5


def test_quality_gate_failure_fails_the_task_and_keeps_the_rows_out_of_the_marts(
    airflow_db, broker, warehouse_dsn, topic, gate_caught_up, monkeypatch, tmp_path
):
    from datetime import datetime

    import psycopg

    from purchases.check import QualityGateFailed, run_quality_gate
    from purchases.load import LoaderConfig, load_partition

    from .helpers import Staged, add_customers

    monkeypatch.setenv("GX_DATA_DOCS_DIR", str(tmp_path / "docs"))
    [doomed] = add_customers(warehouse_dsn, 1)
    produce(broker.bootstrap, topic, [(None, make_event(doomed, n).to_bytes()) for n in range(3)])
    loaded = load_partition(
        LoaderConfig(broker.bootstrap, warehouse_dsn, topic), 0, window_seconds=30, stop_when_idle=True
    )
    assert loaded.loaded == 3
    with psycopg.connect(warehouse_dsn) as conn:  # the customer disappears after the load: rows now orphaned
        conn.execute("delete from app.customers where customer_id = %s", (doomed,))

    with pytest.raises(QualityGateFailed, match="known customer.*3 unexpected.*stay out of the marts"):
        run_quality_gate(warehouse_dsn)

    started = datetime.now(UTC)
    run = load_dag("purchases_quality").test()
    try:
        assert task_states(run) == {"quality_gate": ["failed"]}  # AirflowFailException: no retries
        assert asset_events("staging_purchase_events", started) == []
        assert (tmp_path / "docs" / "index.html").exists()
        assert Staged(warehouse_dsn, topic).passed() == 0
    finally:
        delete_dag_run(run)


def test_postgres_connection_lost_mid_run_the_load_task_retries_and_the_result_is_exact(
    airflow_db, broker, warehouse_dsn, dag_topic, customers, monkeypatch, tmp_path
):
    """The loader's backend is terminated (as by a Postgres restart) between COPY and COMMIT inside a real
    DAG run; Airflow retries the mapped task and the partition ends up loaded exactly once."""
    import threading

    import psycopg

    from purchases.load import PAUSE_BEFORE_COMMIT_ENV

    from .helpers import Staged

    monkeypatch.setenv("PURCHASES_LOADER_RETRY_DELAY_SECONDS", "1")
    marker = tmp_path / "paused"
    monkeypatch.setenv(PAUSE_BEFORE_COMMIT_ENV, str(marker))
    events = [make_event(customers[0], n) for n in range(60)]
    produce(broker.bootstrap, dag_topic, [(None, e.to_bytes()) for e in events], partition=1)
    killed = []

    def saboteur():
        deadline = time.monotonic() + 120
        pauses = 0
        while pauses < 2 and time.monotonic() < deadline:
            if marker.exists():
                pauses += 1
                if pauses == 1:  # first try: kill its connection, then let it try to COMMIT
                    with psycopg.connect(warehouse_dsn, autocommit=True) as conn:
                        killed.extend(
                            row[0]
                            for row in conn.execute(
                                "select pg_terminate_backend(pid) from pg_stat_activity "
                                "where application_name = 'purchases-loader' and datname = current_database()"
                            )
                        )
                marker.unlink()
            time.sleep(0.05)

    thread = threading.Thread(target=saboteur, daemon=True)
    thread.start()
    run = load_dag("purchases_ingest").test(run_conf={"window_seconds": 3})
    thread.join(10)

    assert killed == [True]
    loads = {ti.map_index: ti for ti in run.get_task_instances() if ti.task_id == "load"}
    assert str(loads[1].state) == "success" and loads[1].try_number == 2  # failed once, retried
    assert str(run.state) == "success", task_states(run)
    staged = Staged(warehouse_dsn, dag_topic)
    assert staged.events() == {e.event_id: offset for offset, e in enumerate(events)}
    assert staged.next_offset(1) == 60


def test_broker_down_the_task_fails_with_a_clear_message_after_airflow_retries(
    airflow_db, warehouse_dsn, dag_topic, monkeypatch, capfd
):
    from support import free_port

    address = f"127.0.0.1:{free_port()}"
    monkeypatch.setenv(
        "AIRFLOW_CONN_KAFKA_DEFAULT", json.dumps({"conn_type": "kafka", "extra": {"bootstrap.servers": address}})
    )
    monkeypatch.setenv("PURCHASES_LOADER_RETRIES", "1")
    monkeypatch.setenv("PURCHASES_LOADER_RETRY_DELAY_SECONDS", "1")
    dag = load_dag("purchases_ingest")
    assert dag.get_task("load").retries == 1

    run = dag.test(run_conf={"window_seconds": 1})

    assert str(run.state) == "failed"
    [partitions] = [ti for ti in run.get_task_instances() if ti.task_id == "partitions"]
    assert str(partitions.state) == "failed" and partitions.try_number == 2  # tried, retried, failed
    logs = capfd.readouterr().out  # dag.test runs tasks in this process and logs to stdout
    assert f"cannot read the partitions of topic '{dag_topic}' from the Kafka broker at {address}" in logs
