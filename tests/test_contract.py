"""The contract is the one definition: the dbt project reads its rules from a macro generated from it."""

from __future__ import annotations

from pathlib import Path

from purchases import contract

ROOT = Path(__file__).resolve().parents[1]


def test_the_dbt_macro_is_the_one_the_contract_generates():
    committed = (ROOT / "dbt" / contract.DBT_MACRO_PATH).read_text()
    assert committed == contract.render_dbt_macro(), (
        "the contract changed: run `python -m purchases.contract` and commit dbt/macros/event_contract.sql"
    )
