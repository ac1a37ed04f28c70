"""The pipeline on Airflow's CeleryExecutor, with workers that share no disk: the real scripts/up.sh and
scripts/down.sh with AIRFLOW_EXECUTOR=celery, on a stack private to this test (its own free ports, databases,
run, log, secrets and Airflow directories, and a Redis database of its own, flushed after).

One stack, several assertions: a loader run's partition tasks run on both workers; a worker SIGKILLed (with
all its processes, as when its machine dies) in the middle of a batch loses nothing and doubles nothing, and
its task is retried on the other worker once its heartbeat is missed; the quality gate and the transform
(Cosmos) complete on the workers; the dbt docs and the Data Docs a worker wrote are served by the api-server
(from the warehouse: the worker's own copies are deleted first).
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import time
from pathlib import Path

import httpx
import psutil
import psycopg
import pytest
from support import sign_up

from bench.private_stack import WORKER_ADDRESSES, PrivateStack

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[1]
ADDRESSES = WORKER_ADDRESSES
# The loader's test hook, relative: each worker's task processes resolve it in that worker's own directory
# (their working directory), so the test holds or releases each worker's batch on its own.
MARKER = "pause-before-commit"
HEARTBEAT_TIMEOUT = 20


class CeleryStack(PrivateStack):
    """A private stack in Celery mode, with the loader's pause hook on its workers (not on down's drain)."""

    def __init__(self, tmp: Path):
        super().__init__(
            tmp,
            "celery_test",
            executor="celery",
            # Short enough for a test: a lost task is failed 20 s after its last heartbeat (every 5 s).
            AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT=str(HEARTBEAT_TIMEOUT),
            AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL="3",
            PURCHASES_LOADER_RETRY_DELAY_SECONDS="1",
            PURCHASES_LOADER_WINDOW_SECONDS="8",
        )

    def up(self) -> str:
        # The hook only for up (the workers): down's drain runs the loader too, and must not wait.
        return super().up(PURCHASES_LOADER_PAUSE_BEFORE_COMMIT=MARKER)

    def release(self, *workers: str) -> None:
        """Let the batches of these workers' loader tasks commit (the test hook waits for the file to go)."""
        for worker in workers:
            (self.home(worker) / MARKER).unlink(missing_ok=True)

    def wait(self, what: str, timeout: float, predicate, release: tuple[str, ...] = ("worker-2",)):
        """Calls `predicate` until it returns something true, releasing the batches of `release` meanwhile."""
        deadline = time.monotonic() + timeout
        while True:
            self.release(*release)
            result = predicate()
            if result:
                return result
            assert time.monotonic() < deadline, f"{what}: not within {timeout:.0f} s\n{self.log_tails()}"
            time.sleep(0.3)


def buy(api: str, customers: int, each: int) -> list[str]:
    """Sign up `customers` (keys spread over the partitions) and buy `each` purchases for each: the event ids."""
    ids = []
    with httpx.Client(base_url=api, timeout=30) as client:
        for _ in range(customers):
            customer = sign_up(client, "celery")
            for n in range(each):
                body = {"product_name": "Lamp", "quantity": 1, "unit_price": "9.99", "currency": "EUR"}
                answer = client.post("/purchases", json={**body, "description": f"#{n}"}, headers=customer.headers)
                assert answer.status_code == 202, answer.text
                ids.append(answer.json()["event_id"])
    return ids


def kill_machine(pid: int) -> list[int]:
    """SIGKILL a worker and every process it started, all at once, as when its machine dies."""
    root = psutil.Process(pid)
    processes = [root, *root.children(recursive=True)]
    for process in processes:
        try:
            process.send_signal(signal.SIGKILL)
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(processes, timeout=10)
    return [process.pid for process in processes]


def sign_in(url: str) -> dict:
    answer = httpx.post(url + "/auth/token", json={"username": "admin", "password": "admin"}, timeout=30)
    assert answer.status_code in (200, 201), answer.text
    return {"Authorization": f"Bearer {answer.json()['access_token']}"}


def test_the_pipeline_on_celery_workers_that_share_no_disk(tmp_path):
    stack = CeleryStack(tmp_path)
    try:
        stack.up()
        workers = {name: stack.pid(name) for name in ADDRESSES}
        assert all(workers.values()), "up.sh must record each worker's pid in worker-N.pid"
        honcho = [p.pid for p in psutil.Process(stack.pid("stack")).children(recursive=True)]
        assert not set(workers.values()) & set(honcho), "a worker must not be one of honcho's processes"

        # 1. Purchases come in; the loader's batches wait before COMMIT (the hook), worker-2's are let through,
        # until one of worker-1's is written and not committed.
        bought = buy(stack.api, customers=6, each=4)
        held = stack.home("worker-1") / MARKER

        def worker_1_holds_a_batch():
            if held.exists():
                return True
            if len(stack.warehouse_rows("select 1 from staging.purchase_events")) == len(bought):
                bought.extend(buy(stack.api, customers=2, each=2))  # all went through worker-2: more
            return False

        stack.wait("a batch written on worker-1", 120, worker_1_holds_a_batch)
        time.sleep(0.5)  # the batch's JSON is complete
        batch = json.loads(held.read_text())
        lost = stack.airflow_rows(
            "select run_id, map_index, try_number from task_instance where dag_id = 'purchases_ingest' "
            "and task_id = 'load' and state = 'running' and hostname = %s",
            (ADDRESSES["worker-1"],),
        )
        assert lost, "no loader task runs on worker-1 although its batch waits"

        # 2. worker-1's machine dies, its batch uncommitted; the batch's rows are nowhere.
        killed = kill_machine(workers["worker-1"])
        assert not any(psutil.pid_exists(pid) and psutil.Process(pid).status() != "zombie" for pid in killed)
        killed_at = time.monotonic()

        def retried_on_worker_2():
            done = stack.airflow_rows(
                "select run_id, map_index, try_number, hostname from task_instance where dag_id = 'purchases_ingest'"
                " and task_id = 'load' and state = 'success' and (run_id, map_index) in (select * from unnest("
                "%s::text[], %s::int[]))",
                ([row[0] for row in lost], [row[1] for row in lost]),
            )
            return done if len(done) == len(lost) else None

        retried = stack.wait("worker-1's loader tasks retried and done", 120, retried_on_worker_2)
        recovered_in = time.monotonic() - killed_at
        for (run_id, map_index, try_number), (_, _, new_try, hostname) in zip(
            sorted(lost), sorted(retried), strict=True
        ):
            assert new_try > try_number and hostname == ADDRESSES["worker-2"], (run_id, map_index, new_try, hostname)
            (before,) = stack.airflow_rows(
                "select state, hostname from task_instance_history where dag_id = 'purchases_ingest' and "
                "task_id = 'load' and run_id = %s and map_index = %s and try_number = %s",
                (run_id, map_index, try_number),
            )
            assert before == ("failed", ADDRESSES["worker-1"]), before  # seen as lost: no heartbeat

        # Nothing lost, nothing doubled: every purchase once in staging, every batch counted once.
        def all_staged():
            rows = stack.warehouse_rows("select event_id::text from staging.purchase_events")
            return rows if len(rows) >= len(bought) else None

        staged = stack.wait("every purchase in staging", 60, all_staged)
        assert sorted(row[0] for row in staged) == sorted(bought)
        ((loaded, duplicates, rejected),) = stack.warehouse_rows(
            "select sum(loaded), sum(duplicates), sum(rejected) from staging.loaded_batches where kind = 'load'"
        )
        assert (loaded, duplicates, rejected) == (len(bought), 0, 0)
        offsets = dict(stack.warehouse_rows("select kafka_partition, next_offset from staging.kafka_offsets"))
        assert batch["partition"] in offsets and sum(offsets.values()) == len(bought)

        # One loader run's partition tasks ran on both workers (task instances' hostnames, every try).
        spread = stack.airflow_rows(
            "select run_id from (select run_id, hostname from task_instance where dag_id = 'purchases_ingest' and "
            "task_id = 'load' union all select run_id, hostname from task_instance_history where dag_id = "
            "'purchases_ingest' and task_id = 'load') tries group by run_id having count(distinct hostname) > 1"
        )
        assert spread, "no loader run had its partition tasks on more than one worker"

        # 3. The gate and the transform run on the worker left, and the marts hold every purchase.
        def in_the_marts():
            try:
                rows = stack.warehouse_rows("select coalesce(sum(purchase_count), 0) from marts.customer_spend")
            except psycopg.errors.UndefinedTable:  # no transform run has built it yet (the first may have
                return False  # run on worker-1, and died with it)
            return rows[0][0] == len(bought)

        stack.wait("every purchase through the gate and dbt into marts.customer_spend", 150, in_the_marts)
        gate = stack.airflow_rows(
            "select hostname from task_instance where dag_id = 'purchases_quality' and task_id = 'quality_gate' "
            "and state = 'success' order by end_date desc limit 1"
        )
        assert gate and gate[0][0] in ADDRESSES.values()
        stack.wait(
            "a transform run that succeeded on the workers",
            60,
            lambda: stack.airflow_rows(
                "select 1 from dag_run r join task_instance t using (dag_id, run_id) where r.dag_id = "
                "'purchases_transform' and r.state = 'success' and t.task_id = 'dbt.dbt_producer_watcher' and "
                "t.hostname = any(%s)",
                (list(ADDRESSES.values()),),
            ),
        )
        docs_writer = stack.airflow_rows(
            "select hostname from task_instance where dag_id = 'purchases_transform' and task_id = "
            "'regenerate_dbt_docs' and state = 'success' order by end_date desc limit 1"
        )
        assert docs_writer and docs_writer[0][0] in ADDRESSES.values()

        # 4. The pages, served by the api-server from the warehouse: the workers' own copies are gone first.
        worker_of = {address: name for name, address in ADDRESSES.items()}
        dbt_page = stack.home(worker_of[docs_writer[0][0]]) / "dbt" / "docs" / "index.html"
        gate_site = stack.home(worker_of[gate[0][0]]) / "data_docs" / "staging_quality"
        written_dbt, written_index = dbt_page.read_bytes(), (gate_site / "index.html").read_bytes()
        for name in ADDRESSES:
            subprocess.run(["rm", "-rf", str(stack.home(name) / "dbt" / "docs"), str(stack.home(name) / "data_docs")])
        headers = sign_in(stack.airflow)
        with httpx.Client(base_url=stack.airflow, headers=headers, timeout=60) as client:
            page = client.get("/dbt-docs/")
            assert page.status_code == 200 and 'ng-app="dbt"' in page.text
            assert page.content == written_dbt
            assert client.get("/dbt-docs/", headers={"If-None-Match": page.headers["etag"]}).status_code == 304
            index = client.get("/data-docs/")
            assert index.status_code == 200 and index.content == written_index
            # The index links each validation from a table its script fills in (a quoted JS string, URL-encoded).
            validation = re.search(r"validations/[^'\"]+\.html", index.text)
            assert validation, "the Data Docs index links no validation"
            validation = validation.group(0)
            assert client.get(f"/data-docs/{validation}").status_code == 200
            assert client.get("/data-docs/static/styles/data_docs_default_styles.css").status_code == 200
            assert httpx.get(stack.airflow + "/data-docs/", timeout=30).status_code == 401

        gate_times = stack.task_durations("purchases_quality", "quality_gate")
        build_times = stack.task_durations("purchases_transform", "dbt.dbt_producer_watcher")
        print(
            f"celery: {len(bought)} purchases; worker-1's tasks retried on worker-2 {recovered_in:.0f} s after the"
            f" kill (heartbeat timeout {HEARTBEAT_TIMEOUT} s); quality_gate task durations {gate_times} s;"
            f" dbt build task durations {build_times} s"
        )

        # 5. down stops the workers too.
        stack.down()
        assert stack.listening() == [], "down left something listening"
        assert not psutil.pid_exists(workers["worker-2"]) or psutil.Process(workers["worker-2"]).status() == "zombie"
        assert not list(stack.run_dir.glob("worker-*.pid"))
    finally:
        stack.stop()
