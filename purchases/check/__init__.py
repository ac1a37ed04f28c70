"""Check: the quality gate between staging and the marts (Great Expectations on every batch not yet passed).

`batches` says which batches wait for the gate and marks them passed; `gate` runs the suite on their rows.
Only rows of passed batches reach the marts (the view staging.purchase_events_passed, dbt's source).
"""

from purchases.check.gate import QualityGateFailed, QualityResult, run_quality_gate

__all__ = ["QualityGateFailed", "QualityResult", "run_quality_gate"]
