"""The capacity plan, computed from the figures in bench/results/latest.json (pure arithmetic, no I/O).

`plan(figures)` takes today's peak (the API's accepted purchases/s), what one partition task sustains and the
loader's CPU, WAL and storage per event (`make bench-loader`), the COPY ceilings of one table and of a
partitioned one, and the incremental dbt run (`make bench-dbt`), and says for 1x, 10x and 100x that peak how
many partitions and loader slots it takes, what Postgres, the broker and dbt then have to do, and what has to
change. `markdown(plan)` renders it for the report. The method is in docs/capacity.md.
"""

from __future__ import annotations

import math

from purchases.load.config import LoaderConfig

MULTIPLES = (1, 10, 100)
# Policy: every part is sized to run at half of what it was measured to do, so a backlog (after an outage,
# a burst) drains as fast as it built up.
HEADROOM = 0.5
# Assumptions, not measurements: what one Postgres node is taken to give. Beyond either, the plan moves
# staging and the marts off one Postgres (dbt on a warehouse adapter).
NODE_CORES = 64
NODE_WAL_MB_PER_S = 1000
# A transform run takes what one loader window brought (the Asset is emitted after every partition's window).
TRANSFORM_EVERY_S = LoaderConfig.window_seconds


def _cell(cells: list[dict], partitions: int, workers: int) -> dict | None:
    return next((c for c in cells if (c["partitions"], c["workers"]) == (partitions, workers)), None)


def peak(figures: dict) -> dict | None:
    """Today's measured peak: the highest accepted purchases/s of the API (batch endpoint, or single
    purchases: one per request)."""
    candidates = [
        (figures[name]["value"], name, figures[name].get("measured_at"))
        for name in ("ingest_batch_purchases_per_s", "ingest_rps")
        if name in figures and figures[name].get("value")
    ]
    if not candidates:
        return None
    value, name, measured_at = max(candidates)
    return {"events_per_s": value, "figure": name, "measured_at": measured_at}


def cpu_us_per_event(figures: dict) -> dict:
    """µs of CPU per event, of the loader processes, of Postgres and of the broker. Loader and Postgres from
    the loader_events_per_s run (the largest: start-up weighs least); the broker's from the matrix cells
    (its fetch work during the loads plus its produce work, over all cells)."""
    run = figures["loader_events_per_s"]
    cpu = run["load_cpu"]["cpu_s"]
    cells = figures["loader_capacity"]["cells"]
    events = sum(c["events"] for c in cells)
    broker = sum(c["cpu_s"]["broker"] + c["produce"]["broker_cpu_s"] for c in cells)
    return {
        "loader": cpu["loader"] / run["events"] * 1e6,
        "postgres": cpu["postgres"] / run["events"] * 1e6,
        "broker": broker / events * 1e6,
    }


def plan(figures: dict, cpus: int | None = None) -> dict | None:
    """None unless the peak, loader_events_per_s (with its CPU) and loader_capacity are all there. `cpus`:
    the cores of the machine the figures were measured on."""
    top = peak(figures)
    if top is None or "loader_capacity" not in figures or "load_cpu" not in figures.get("loader_events_per_s", {}):
        return None
    capacity, run = figures["loader_capacity"], figures["loader_events_per_s"]
    cells, copy = capacity["cells"], capacity["copy_ceiling"]
    unit = capacity["value"]
    cpu = cpu_us_per_event(figures)
    one_stream = copy["one_table_1_stream_rows_per_s"]
    one_table = max(one_stream, copy["one_table_2_streams_rows_per_s"])
    best = max(cells, key=lambda c: c["events_per_s"])
    dbt = figures.get("dbt_incremental_s")
    dbt_floor = dbt["new_events"] / dbt["value"] if dbt else None

    total_cpu = cpu["loader"] + cpu["postgres"] + cpu["broker"]
    task_cores = unit * total_cpu / 1e6
    scaling = {"cores_per_partition_task": round(task_cores, 2)}
    if cpus:
        # What a second worker can add on this machine at most, if the cell is CPU-bound.
        scaling["w2_vs_w1_if_cpu_bound"] = round(min(2.0, cpus / task_cores), 2)
    single = _cell(cells, 1, 1)
    scaling["by_partitions"] = []
    for partitions in sorted({c["partitions"] for c in cells} - {1}):
        w1, w2 = _cell(cells, partitions, 1), _cell(cells, partitions, 2)
        scaling["by_partitions"].append(
            {
                "partitions": partitions,
                # 1 worker: the partitions' tasks one after another; the same rate as one partition but
                # for each process's start-up.
                "w1_vs_one_partition": round(w1["events_per_s"] / single["events_per_s"], 2) if w1 and single else None,
                "w2_vs_w1": round(w2["events_per_s"] / w1["events_per_s"], 2) if w1 and w2 else None,
            }
        )

    def limit(name: str, events_per_s: float | None, basis: str, lifted_by: str) -> dict | None:
        if not events_per_s:
            return None
        return {
            "limit": name,
            "events_per_s": round(events_per_s),
            "x_peak": round(events_per_s / top["events_per_s"], 2),
            "basis": basis,
            "lifted_by": lifted_by,
        }

    limits = [
        limit("one partition task", unit, "measured", "more partitions and loader slots"),
        limit(
            f"loader, {run['partitions']} partitions in parallel, this machine",
            run["value"],
            "measured",
            "more cores",
        ),
        limit(
            f"best matrix cell ({best['partitions']} partitions, {best['workers']} workers), this machine",
            best["events_per_s"],
            "measured",
            "more cores",
        ),
        limit(
            f"this machine's {cpus} cores, if loader + Postgres + broker were CPU-bound",
            cpus * 1e6 / total_cpu if cpus else None,
            "derived from CPU per event",
            "more cores",
        ),
        limit("COPY into one table, 1 stream", one_stream, "measured", "a partitioned staging table"),
        limit(
            "COPY into one table, 2 streams",
            copy["one_table_2_streams_rows_per_s"],
            "measured (2 cores)",
            "a partitioned staging table",
        ),
        limit(
            "COPY into a 2-partition table, 2 streams",
            copy["partitioned_2_streams_rows_per_s"],
            "measured (2 cores)",
            "more partitions and cores",
        ),
        limit("broker (tansu), per core", 1e6 / cpu["broker"], "derived from CPU per event", "more broker cores"),
        limit(
            "dbt incremental run on Postgres, at least",
            dbt_floor,
            "lower bound: all of one run's time counted as per-event",
            "a warehouse adapter",
        ),
    ]
    limits = [x for x in limits if x]
    # What adding partitions and loader slots does not lift; the lowest comes next. One table's COPY
    # ceiling is the better of its 1- and 2-stream figures.
    fixed = [
        limit("COPY into one table", one_table, "measured, best of 1 and 2 streams", "a partitioned staging table"),
        limit("broker (tansu), per core", 1e6 / cpu["broker"], "derived from CPU per event", "more broker cores"),
    ]
    next_limit = min(fixed, key=lambda x: x["events_per_s"])
    dbt_limit = next((x for x in limits if x["limit"].startswith("dbt")), None)

    steps = []
    for multiple in MULTIPLES:
        target = multiple * top["events_per_s"]
        partitions = math.ceil(target / (unit * HEADROOM))
        postgres_cores = target * cpu["postgres"] / 1e6
        wal_mb_s = target * run.get("wal_bytes_per_event", 0) / 1e6
        one_table_ok = target <= one_table * HEADROOM
        # Hash-partitioned on event_id, every loader's COPY spreads over all of them: each partition takes
        # 1/n of the rows, and is sized like one table.
        staging_partitions = 1 if one_table_ok else math.ceil(target / (one_table * HEADROOM))
        dbt_shown = dbt_floor is not None and target <= dbt_floor * HEADROOM
        dbt_cores_if_per_event = target / dbt_floor if dbt_floor else None
        postgres_node_exceeded = postgres_cores > NODE_CORES or wal_mb_s > NODE_WAL_MB_PER_S
        changes = []
        if partitions > run["partitions"]:
            changes.append(f"{partitions} partitions, {partitions} loader slots")
        if not one_table_ok:
            changes.append(f"staging hash-partitioned on event_id into {staging_partitions}")
        if postgres_node_exceeded:
            changes.append("staging and marts off one Postgres node: dbt on a warehouse adapter")
        elif not dbt_shown:
            changes.append(
                f"dbt: measure an incremental run of {round(target * TRANSFORM_EVERY_S):,} new events (one "
                f"{TRANSFORM_EVERY_S:.0f} s loader window at this rate) before deciding; a warehouse adapter if "
                "it cannot keep up"
            )
        steps.append(
            {
                "multiple": multiple,
                "events_per_s": round(target),
                "partitions": partitions,
                "loader_slots": partitions,
                "loader_cores": round(target * cpu["loader"] / 1e6, 1),
                "postgres_copy_cores": round(postgres_cores, 1),
                "broker_cores": round(target * cpu["broker"] / 1e6, 1),
                "wal_mb_per_s": round(wal_mb_s, 1),
                "staging_gb_per_hour": round(target * run.get("staging_bytes_per_event", 0) * 3600 / 1e9, 1),
                "one_table_copy_enough": one_table_ok,
                "staging_partitions": staging_partitions,
                "dbt_shown_to_keep_up": dbt_shown,
                "dbt_cores_if_all_per_event": round(dbt_cores_if_per_event, 1) if dbt_cores_if_per_event else None,
                "postgres_node_exceeded": postgres_node_exceeded,
                "changes": changes or ["nothing"],
                "basis": "measured" if target <= max(best["events_per_s"], run["value"]) else "extrapolated",
            }
        )
    return {
        "peak": top,
        "unit_events_per_s": unit,
        "cpu_us_per_event": {k: round(v, 2) for k, v in cpu.items()},
        "scaling": scaling,
        "limits": limits,
        "next_limit": next_limit,
        "dbt_limit": dbt_limit,
        "steps": steps,
    }


def _n(value) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float) and not value.is_integer():
        return f"{value:,.2f}" if abs(value) < 10 else f"{value:,.1f}"
    return f"{int(value):,}"


def matrix_markdown(capacity: dict) -> list[str]:
    lines = [
        "## Loader capacity matrix",
        "",
        f"{capacity['matrix_events']:,} events per cell, best of {capacity['matrix_rounds']} round(s); workers = "
        "loader processes at once. CPU in µs per event during the load; busy = the machine's busy share of its "
        "cores; other = CPU seconds of other work on the machine meanwhile.",
        "",
        "| partitions | workers | events/s | rounds | per process, sustained | loader µs/ev | Postgres µs/ev "
        "| broker µs/ev | WAL B/ev | busy | other s | load 1m |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for c in capacity["cells"]:
        per = {k: c["cpu_s"][k] / c["events"] * 1e6 for k in ("loader", "postgres", "broker")}
        lines.append(
            f"| {c['partitions']} | {c['workers']} | {_n(c['events_per_s'])} | "
            f"{', '.join(_n(r) for r in c['rounds_events_per_s'])} | "
            f"{_n(c['process_sustained_events_per_s_median'])} | {per['loader']:.1f} | {per['postgres']:.1f} | "
            f"{per['broker']:.1f} | {_n(c.get('wal_bytes_per_event'))} | {c['machine_busy_fraction']:.0%} | "
            f"{_n(c['other_cpu_s'])} | {c['load_average_1m']} |"
        )
    copy = capacity["copy_ceiling"]
    lines += [
        "",
        f"COPY ceiling ({copy['rows']:,} rows, rows/s, best of {len(next(iter(copy['tries'].values())))}): "
        f"one table, 1 stream {_n(copy['one_table_1_stream_rows_per_s'])}; one table, 2 streams "
        f"{_n(copy['one_table_2_streams_rows_per_s'])}; hash-partitioned in 2, 2 streams "
        f"{_n(copy['partitioned_2_streams_rows_per_s'])}.",
    ]
    return lines


def markdown(p: dict) -> list[str]:
    top, cpu, scaling = p["peak"], p["cpu_us_per_event"], p["scaling"]
    sustain = (
        f"One partition task at its sustained rate uses {scaling['cores_per_partition_task']} cores (loader, "
        "Postgres, broker)"
    )
    if "w2_vs_w1_if_cpu_bound" in scaling:
        sustain += f", so a second worker can add at most {scaling['w2_vs_w1_if_cpu_bound']}× on this machine"
    measured = [
        f"{x['partitions']} partitions: 1 worker {x['w1_vs_one_partition']}× one partition, 2 workers "
        f"{x['w2_vs_w1']}× 1 worker"
        for x in scaling["by_partitions"]
    ]
    lines = [
        "## Capacity plan",
        "",
        f"Today's peak: {_n(top['events_per_s'])} purchases/s (`{top['figure']}`, {top['measured_at']}), sized "
        f"as if sustained. Every part is sized at {HEADROOM:.0%} of what it was measured to do. CPU per event: "
        f"loader {cpu['loader']} µs, Postgres {cpu['postgres']} µs, broker {cpu['broker']} µs. {sustain}. "
        f"Measured: {'; '.join(measured)}.",
        "",
        "| limit | events/s | × today's peak | basis | lifted by |",
        "| --- | --- | --- | --- | --- |",
    ]
    lines += [
        f"| {x['limit']} | {_n(x['events_per_s'])} | {x['x_peak']} | {x['basis']} | {x['lifted_by']} |"
        for x in p["limits"]
    ]
    nxt, dbt = p["next_limit"], p["dbt_limit"]
    if nxt:
        lines += [
            "",
            f"Next limit once partitions and slots are added: **{nxt['limit']}**, {_n(nxt['events_per_s'])} "
            f"events/s = {nxt['x_peak']}× today's peak ({nxt['basis']}).",
        ]
    if dbt:
        lines.append(
            f"dbt is shown to keep up to at least {_n(dbt['events_per_s'])} events/s ({dbt['x_peak']}× the peak); "
            + (
                "that is below the next limit, so dbt may come first: bench-dbt measured one size of new events "
                "only, which cannot tell its fixed cost from its cost per event."
                if nxt and dbt["events_per_s"] < nxt["events_per_s"]
                else "its real limit is higher and unmeasured."
            )
        )
    lines += [
        "",
        "| step | events/s | partitions = loader slots | loader cores | Postgres cores (COPY) | broker cores "
        "| WAL MB/s | staging GB/hour | one table enough | dbt shown to keep up | dbt cores if all per event "
        "| change | basis |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for s in p["steps"]:
        lines.append(
            f"| {s['multiple']}x | {_n(s['events_per_s'])} | {_n(s['partitions'])} | {_n(s['loader_cores'])} | "
            f"{_n(s['postgres_copy_cores'])} | {_n(s['broker_cores'])} | {_n(s['wal_mb_per_s'])} | "
            f"{_n(s['staging_gb_per_hour'])} | {_n(s['one_table_copy_enough'])} | "
            f"{_n(s['dbt_shown_to_keep_up'])} | {_n(s['dbt_cores_if_all_per_event'])} | "
            f"{'; '.join(s['changes'])} | {s['basis']} |"
        )
    lines += [
        "",
        f"Extrapolated rows scale the measured per-partition rate and per-event CPU, WAL and storage linearly; "
        f"the matrix measured up to 2 workers and 2 COPY streams on this machine only. Assumed, not measured: "
        f"one Postgres node gives at most {NODE_CORES} cores and {NODE_WAL_MB_PER_S:,} MB/s of WAL; the broker's "
        f"CPU is the embedded tansu's, not Apache Kafka's. Method: [docs/capacity.md](../../docs/capacity.md).",
    ]
    return lines
