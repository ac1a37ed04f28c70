"""A customer's spend always counts exactly the purchases the list shows, while the real pipeline runs.

Customers buy and read concurrently while the loader, the quality gate and dbt (`dbt run`, in this process as
Cosmos runs it) go round in a loop, so reads land at every moment: before a purchase is loaded, between the
gate and dbt, between dbt's customer_purchases and customer_spend models, right after. At every read the test
takes spend, the whole list, spend again; when both spend readings agree (nothing was recorded in between:
purchases are only ever added), the list read between them must sum, per currency, to exactly that spend, to
the cent. At the end, once the pipeline has caught up, everything bought is counted in marts.customer_spend
(what Grafana reads) and the API says nothing is left outside the marts.
"""

from __future__ import annotations

import random
import tempfile
import threading
import time
from collections import Counter, defaultdict
from decimal import Decimal
from pathlib import Path

import httpx
import psycopg
import pytest
from support import sign_up

pytestmark = pytest.mark.e2e

CUSTOMERS = 4
PIPELINE_ROUNDS = 4  # dbt runs while customers read; each round: load, gate, dbt
CURRENCIES = ("USD", "EUR")


class Pipeline(threading.Thread):
    """The loader, the gate and dbt, one after the other, round after round, as the DAGs run them."""

    def __init__(self, warehouse_dsn: str):
        super().__init__(daemon=True)
        from purchases.settings import Settings

        settings = Settings(WAREHOUSE_DSN=warehouse_dsn)
        self.bootstrap, self.topic = settings.kafka_bootstrap_servers, settings.purchases_topic
        self.loader_dsn, self.gate_dsn = settings.dsn_as("loader"), settings.dsn_as("gate")
        self.rounds = 0
        self.stopping = threading.Event()
        self.error: BaseException | None = None

    def one_round(self) -> None:
        from purchases.check import run_quality_gate
        from purchases.load.run import load_available
        from purchases.transform.project import invoke_dbt

        load_available(self.bootstrap, self.loader_dsn, self.topic, window_seconds=30)
        run_quality_gate(self.gate_dsn, run_name=f"consistency_{self.rounds}")
        with tempfile.TemporaryDirectory(prefix="dbt_consistency_") as target:
            invoke_dbt("run", "--select", "+customer_spend", target_path=Path(target))
        self.rounds += 1

    def run(self) -> None:
        from purchases.transform.project import invoke_dbt

        try:
            with tempfile.TemporaryDirectory(prefix="dbt_consistency_") as target:
                invoke_dbt("seed", target_path=Path(target))  # spend_thresholds, which customer_spend reads
            while not self.stopping.is_set():
                self.one_round()
        except BaseException as exc:  # noqa: BLE001 - reported by the test, not lost in the thread
            self.error = exc


class Shopper(threading.Thread):
    """Buys a few purchases at a time and reads its list and spend after each, checking that they agree."""

    def __init__(self, url: str, name: str, pipeline: Pipeline, seed: int):
        super().__init__(daemon=True)
        self.client = httpx.Client(base_url=url, timeout=30)
        self.customer = sign_up(self.client, name)
        self.pipeline = pipeline
        self.random = random.Random(seed)
        self.bought: dict[str, Decimal] = defaultdict(Decimal)
        self.bought_count = 0
        self.checked = Counter()  # agreeing reads: all / with purchases not yet in the marts / with some counted
        self.error: BaseException | None = None

    def get(self, path: str, **params) -> dict:
        answer = self.client.get(path, params=params, headers=self.customer.headers)
        assert answer.status_code == 200, answer.text
        return answer.json()

    def listed_totals(self) -> dict[str, Decimal]:
        totals, cursor = defaultdict(Decimal), None
        while True:
            page = self.get("/customers/me/purchases", limit=200, **({"cursor": cursor} if cursor else {}))
            for item in page["items"]:
                totals[item["currency"]] += Decimal(item["total_price"])
            cursor = page["next_cursor"]
            if not cursor:
                return dict(totals)

    def check_once(self) -> None:
        before = self.get("/customers/me/spend")
        listed = self.listed_totals()
        after = self.get("/customers/me/spend")
        counts = [[(t["currency"], t["purchase_count"]) for t in spend["totals"]] for spend in (before, after)]
        if counts[0] != counts[1]:
            return  # recorded in between: this picture is not one moment; the next read is
        spent = {t["currency"]: Decimal(t["total_spend"]) for t in after["totals"]}
        assert spent == listed, f"spend {after['totals']} but the list sums to {listed}"
        self.checked["reads"] += 1
        if any(t["not_yet_in_marts"] for t in after["totals"]):
            self.checked["with purchases not yet in the marts"] += 1
        if any(t["purchase_count"] > t["not_yet_in_marts"] for t in after["totals"]):
            self.checked["with purchases counted by the marts"] += 1

    def buy(self) -> None:
        currency = self.random.choice(CURRENCIES)
        quantity = self.random.randint(1, 5)
        unit_price = Decimal(self.random.randint(1, 10**7)) / 100  # 0.01 .. 100000.00
        answer = self.client.post(
            "/purchases",
            json={"product_name": "p", "quantity": quantity, "unit_price": str(unit_price), "currency": currency},
            headers=self.customer.headers,
        )
        assert answer.status_code == 202, answer.text
        self.bought[currency] += quantity * unit_price
        self.bought_count += 1

    def run(self) -> None:
        try:
            while self.pipeline.rounds < PIPELINE_ROUNDS and self.pipeline.error is None:
                for _ in range(self.random.randint(1, 3)):
                    self.buy()
                self.check_once()
                time.sleep(self.random.uniform(0, 0.2))
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.error = exc


def test_spend_counts_exactly_the_listed_purchases_at_every_read_while_dbt_runs(api_server, warehouse_dsn):
    pipeline = Pipeline(warehouse_dsn)
    shoppers = [Shopper(api_server.url, f"consistent{i}", pipeline, seed=i) for i in range(CUSTOMERS)]
    pipeline.start()
    for shopper in shoppers:
        shopper.start()
    for shopper in shoppers:
        shopper.join(timeout=600)
    pipeline.stopping.set()
    pipeline.join(timeout=600)
    assert pipeline.error is None, f"the pipeline failed: {pipeline.error!r}"
    for shopper in shoppers:
        assert shopper.error is None, f"{shopper.customer.username}: {shopper.error!r}"

    checked = sum((shopper.checked for shopper in shoppers), Counter())
    # Reads at every stage, or the test proved nothing: some with everything from staging, some from the marts.
    assert checked["reads"] >= 20, checked
    assert checked["with purchases not yet in the marts"] >= 5, checked
    assert checked["with purchases counted by the marts"] >= 5, checked

    pipeline.one_round()  # caught up: everything bought is in the marts
    with psycopg.connect(warehouse_dsn) as conn:
        for shopper in shoppers:
            spend = shopper.get("/customers/me/spend")
            totals = {t["currency"]: Decimal(t["total_spend"]) for t in spend["totals"]}
            assert totals == dict(shopper.bought) == shopper.listed_totals()
            assert sum(t["purchase_count"] for t in spend["totals"]) == shopper.bought_count
            assert all(t["not_yet_in_marts"] == 0 for t in spend["totals"]), spend
            mart = dict(
                conn.execute(
                    "select currency::text, total_spend from marts.customer_spend where customer_id = %s",
                    (shopper.customer.id,),
                ).fetchall()
            )
            assert mart == dict(shopper.bought)
