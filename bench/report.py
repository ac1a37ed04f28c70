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
    "dbt_incremental_s": ("ratio <= 1.5", lambda f: f["ratio"] is not None and f["ratio"] <= 1.5),
    "freshness_list_p95_s": ("p95 <= 10 s", lambda f: f["value"] is not None and f["value"] <= 10),
    "freshness_spend_p95_s": ("p95 <= 60 s", lambda f: f["value"] is not None and f["value"] <= 60),
}


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
    samples = RESULTS_DIR / "freshness_samples.csv"
    if not samples.exists():
        return False
    values = {"list": [], "spend": []}
    with samples.open() as f:
        for row in csv.DictReader(f):
            values[row["kind"]].append(float(row["seconds"]))
    fig, ax = plt.subplots(figsize=(7, 3.5))
    for kind, label in (("list", "202 -> listed"), ("spend", "202 -> counted in spend")):
        if values[kind]:
            ax.hist(values[kind], bins=40, alpha=0.6, label=label)
    ax.set_xlabel("seconds")
    ax.set_ylabel("purchases")
    ax.set_title("Freshness under load")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
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
    for name in ("freshness_list_p95_s", "freshness_spend_p95_s"):
        if name in figures:
            figure, load = figures[name], figures[name].get("load", {})
            lines += [
                "",
                f"{name}: p50 {figure.get('p50')} s, p95 {figure['value']} s, max {figure.get('max')} s; "
                f"load planned {load.get('rate_per_s')}/s from {load.get('customers')} customers for "
                f"{load.get('seconds')} s, achieved {load.get('achieved_rate_per_s')}/s, "
                f"{load.get('accepted')} accepted.",
            ]
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
