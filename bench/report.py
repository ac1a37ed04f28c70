"""Merges the figures of `make bench` into a dated copy and a short Markdown report with plots."""

from __future__ import annotations

import csv
import json
import shutil
from datetime import UTC, datetime

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from bench import capacity  # noqa: E402
from bench.results import LATEST, RESULTS_DIR  # noqa: E402

GOALS = {  # figure -> (goal on the ratio or value, how to read it)
    "ingest_rps": (
        "ratio >= 0.4, p99 <= 25 ms",
        lambda f: f["ratio"] is not None and f["ratio"] >= 0.4 and f.get("p99_ms", 1e9) <= 25,
    ),
    "ingest_batch_purchases_per_s": (">= 50,000/s", lambda f: f["value"] >= 50_000),
    "loader_events_per_s": ("ratio >= 0.5", lambda f: f["ratio"] is not None and f["ratio"] >= 0.5),
    "login_flood_read_p95_ms": (
        "reads 200, buys 202, p95 < 1,000 ms during the flood; logins 401/429/503 with Retry-After",
        lambda f: (
            f["flood"]["reads"]["statuses"] == [200]
            and f["flood"]["buys"]["statuses"] == [202]
            and f["value"] < 1000
            and f["logins"]["missing_retry_after"] == 0
            and set(map(int, f["logins"]["answers"])) <= {401, 429, 503}
        ),
    ),
    "dbt_incremental_s": ("ratio <= 1.5", lambda f: f["ratio"] is not None and f["ratio"] <= 1.5),
}
# bench-e2e: the same three delays at each rate (no suffix: 200/s; `_high_rate`: the higher rate).
for _suffix in ("", "_high_rate"):
    GOALS |= {
        f"freshness_list_p95_s{_suffix}": ("p95 <= 5 s", lambda f: f["value"] is not None and f["value"] <= 5),
        f"freshness_spend_p95_s{_suffix}": (
            "p95 <= list p95 + 2 s",
            lambda f: f["value"] is not None and f.get("list_p95") is not None and f["value"] <= f["list_p95"] + 2,
        ),
        f"freshness_marts_p95_s{_suffix}": ("p95 <= 60 s", lambda f: f["value"] is not None and f["value"] <= 60),
    }
FRESHNESS = [name for name in GOALS if name.startswith("freshness_")]


def throughput_plot(figures: dict, path) -> None:
    names = [n for n in ("ingest_rps", "loader_events_per_s") if n in figures]
    fig, ax = plt.subplots(figsize=(7, 3.5))
    xs = range(len(names))
    ax.bar([x - 0.2 for x in xs], [figures[n]["value"] for n in names], width=0.4, label="measured")
    ax.bar([x + 0.2 for x in xs], [figures[n]["baseline"] for n in names], width=0.4, label="baseline (same run)")
    ax.set_xticks(list(xs), [f"{n}\n({figures[n]['unit']})" for n in names])
    ax.set_title("Throughput vs its baseline")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def freshness_plot(path) -> bool:
    """One row per rate, one column per delay: how many purchases took how long."""
    samples = RESULTS_DIR / "freshness_samples.csv"
    if not samples.exists():
        return False
    values: dict[str, dict[str, list[float]]] = {}
    with samples.open() as f:
        for row in csv.DictReader(f):
            values.setdefault(row.get("rate_per_s", "?"), {}).setdefault(row["kind"], []).append(float(row["seconds"]))
    kinds = {"list": "202 -> listed", "spend": "202 -> counted by the API", "marts": "202 -> in marts (Grafana)"}
    rates = sorted(values, key=lambda rate: float(rate) if rate != "?" else 0)
    fig, axes = plt.subplots(len(rates), len(kinds), figsize=(12, 3.2 * len(rates)), squeeze=False)
    for row, rate in enumerate(rates):
        for column, (kind, label) in enumerate(kinds.items()):
            ax, seen = axes[row][column], values[rate].get(kind, [])
            if seen:
                ax.hist(seen, bins=40, color=f"C{column}")
                p95 = sorted(seen)[min(len(seen) - 1, round(0.95 * (len(seen) - 1)))]
                ax.axvline(p95, color="black", linestyle="--", linewidth=1, label=f"p95 {p95:.1f} s")
                ax.legend()
            ax.set_title(f"{label}, {rate}/s")
            ax.set_xlabel("seconds")
            ax.set_ylabel("purchases")
    fig.suptitle("Freshness under load (bench-e2e)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def main() -> None:
    results = json.loads(LATEST.read_text())
    figures = results.get("figures", {})
    stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H%M%SZ")
    shutil.copy(LATEST, RESULTS_DIR / f"{stamp}.json")
    throughput_plot(figures, RESULTS_DIR / "throughput.png")
    has_freshness = freshness_plot(RESULTS_DIR / "freshness.png")
    machine = results.get("machine", {})
    lines = [
        f"# Benchmark report, {stamp}",
        "",
        f"Machine: {machine.get('cpus')} cores, {machine.get('memory_gb')} GB, Python {machine.get('python')}.",
        "",
        "| figure | value | unit | baseline (same run) | ratio | goal | met |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, figure in sorted(figures.items()):
        goal, met = GOALS.get(name, ("", lambda f: None))
        verdict = met(figure)
        lines.append(
            f"| {name} | {figure['value']} | {figure['unit']} | {figure['baseline']} | {figure['ratio']} | "
            f"{goal} | {'' if verdict is None else ('yes' if verdict else 'NO')} |"
        )
    for name in FRESHNESS:
        if name in figures:
            figure, load = figures[name], figures[name].get("load", {})
            never = {k: v for k, v in figure.items() if k.startswith("never_") and v}
            lines += [
                "",
                f"{name} ({figure.get('what', '')}): p50 {figure.get('p50')} s, p95 {figure['value']} s, max "
                f"{figure.get('max')} s; load planned {load.get('rate_per_s')}/s from {load.get('customers')} "
                f"customers for {load.get('seconds')} s, achieved {load.get('achieved_rate_per_s')}/s, "
                f"{load.get('accepted')} accepted, load average {load.get('load_average_1m')}"
                + (f"; NOT SEEN: {never}" if never else "; every accepted purchase seen")
                + ".",
            ]
    if "task_seconds_celery" in figures:
        figure = figures["task_seconds_celery"]
        lines += [
            "",
            "Task times by executor (median seconds a successful try ran; median wait from queued to started):",
        ]
        for executor in ("local", "celery"):
            times = figure.get(executor, {})
            gate, build = times.get("quality_gate", {}), times.get("dbt_build", {})
            lines.append(
                f"- {executor}: quality gate {gate.get('median_s')} s (queued {gate.get('median_queued_s')} s, "
                f"{gate.get('runs')} runs), dbt build {build.get('median_s')} s (queued "
                f"{build.get('median_queued_s')} s, {build.get('runs')} runs)"
            )
    if "loader_capacity" in figures:
        lines += ["", *capacity.matrix_markdown(figures["loader_capacity"])]
    plan = capacity.plan(figures, machine.get("cpus"))
    if plan:
        lines += ["", *capacity.markdown(plan)]
    lines += ["", "![throughput](throughput.png)"] + (["", "![freshness](freshness.png)"] if has_freshness else [])
    soak = RESULTS_DIR / "soak_latest.txt"
    if soak.exists():
        lines += ["", "Latest `make soak`:", "", *("    " + line for line in soak.read_text().splitlines())]
    missing = [n for n in GOALS if n not in figures]
    lines += [
        "",
        "Each figure's `*_is` / `baseline_is` field in latest.json says what its baseline is; load averages "
        "are recorded with the figures (the machine has 2 cores).",
    ]
    if missing:
        lines += ["", f"Not measured in this run: {', '.join(missing)}."]
    (RESULTS_DIR / "report.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
