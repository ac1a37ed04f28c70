"""One place that writes benchmark figures: bench/results/latest.json, merged figure by figure."""

from __future__ import annotations

import json
import os
import platform
from datetime import UTC, datetime
from pathlib import Path

RESULTS_DIR = Path(__file__).resolve().parent / "results"
LATEST = RESULTS_DIR / "latest.json"


def machine() -> dict:
    import psutil

    return {
        "cpus": os.cpu_count(),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def record(name: str, value: float, unit: str, baseline: float, *, higher_is_better: bool = True, **details) -> dict:
    """Store one figure {value, unit, baseline, ratio, ...details}; ratio = value / baseline."""
    ratio = value / baseline if baseline else None
    figure = {
        "value": value,
        "unit": unit,
        "baseline": baseline,
        "ratio": round(ratio, 4) if ratio is not None else None,
        "higher_is_better": higher_is_better,
        "measured_at": datetime.now(UTC).isoformat(),
        **details,
    }
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    results = json.loads(LATEST.read_text()) if LATEST.exists() else {}
    results.setdefault("figures", {})[name] = figure
    results["machine"] = machine()
    LATEST.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    print(f"{name}: {json.dumps(figure)}")
    return figure
