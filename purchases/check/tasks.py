"""What the task of the DAG purchases_quality does (the DAG file only wires it)."""

from __future__ import annotations

from typing import Any

from purchases.connections import GATE_CONN_ID, warehouse_dsn


def quality_gate(run_name: str, outlet_events, asset) -> dict[str, Any]:
    """The gate on every batch not passed yet; passing releases the Asset the transform waits for."""
    from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

    from purchases.check import QualityGateFailed, run_quality_gate

    try:
        result = run_quality_gate(warehouse_dsn(GATE_CONN_ID), run_name=run_name)
    except QualityGateFailed as exc:
        # Bad rows do not get better by retrying: fail now, visibly, and hold the transform back.
        raise AirflowFailException(str(exc)) from None
    if result.rows == 0:
        raise AirflowSkipException(f"no new rows passed the gate ({result.batches} batches without rows)")
    outlet_events[asset].extra = {"rows": result.rows, "batches": result.batches, "data_docs": result.data_docs}
    return result.as_dict()
