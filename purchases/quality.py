"""The quality gate: a Great Expectations suite run on the rows a loader run just committed to staging.

The increment is named exactly by Kafka coordinates: for each partition, the offsets the run loaded
([start_offset, next_offset) of its `RunResult`). A failed expectation raises `QualityGateFailed`, which
fails the Airflow task and so holds back the Asset event the transform DAG waits for. Every run writes
Data Docs HTML (default `gx/uncommitted/data_docs/local_site/index.html`, `GX_DATA_DOCS_DIR` to move it).

Great Expectations takes ~10 s of CPU just to import on this machine, so the DAG runs this once per DAG run
in its own task, never inside the loader's batch loop.
"""
from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

log = logging.getLogger(__name__)

PROJECT_ROOT = Path(os.environ.get("PROJECT_ROOT") or Path(__file__).resolve().parents[1])
DATA_DOCS_ENV = "GX_DATA_DOCS_DIR"
SUITE_NAME = "staging_purchase_events_increment"
# Data Docs keeps one page per validation; older pages than this many are removed so the folder stays small.
KEEP_VALIDATION_PAGES = 200


class QualityGateFailed(RuntimeError):
    """Newly loaded staging rows broke an expectation; the message lists which, with examples."""


@dataclass
class QualityResult:
    success: bool
    rows: int
    failed: list[str] = field(default_factory=list)
    data_docs: str | None = None
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def data_docs_dir() -> Path:
    return Path(os.environ.get(DATA_DOCS_ENV) or PROJECT_ROOT / "gx" / "uncommitted" / "data_docs" / "staging_quality")


def increment_query(increments: Iterable[Mapping[str, Any]]) -> sql.Composed | None:
    """`select * from staging.purchase_events` restricted to the rows the given increments added.

    An increment is either a loader run's offset range on one partition (`RunResult.as_dict()`: topic,
    partition, start_offset, next_offset, loaded, loaded_since) or a replay ({"kind": "replay", replayed_at}).
    """
    increments = [i for i in increments if i and i.get("loaded")]
    offsets = [i for i in increments if i.get("kind", "offsets") == "offsets"]
    replays = [i for i in increments if i.get("kind") == "replay"]
    parts = []
    if offsets:
        ranges = sql.SQL(" or ").join(
            sql.SQL("(kafka_topic = {} and kafka_partition = {} and kafka_offset >= {} and kafka_offset < {})")
            .format(sql.Literal(i["topic"]), sql.Literal(int(i["partition"])), sql.Literal(int(i["start_offset"])),
                    sql.Literal(int(i["next_offset"]))) for i in offsets)
        # loaded_at (indexed) narrows the scan to the runs' rows; the offset ranges name them exactly.
        since = min(i["loaded_since"] for i in offsets)
        parts.append(sql.SQL("(loaded_at >= {} and ({}))").format(sql.Literal(since), ranges))
    if replays:
        parts.append(sql.SQL("event_id in (select event_id from staging.purchase_events_rejected "
                             "where replayed_at = any({}::timestamptz[]))")
                     .format(sql.Literal([i["replayed_at"] for i in replays])))
    if not parts:
        return None
    return sql.SQL("select * from staging.purchase_events where {}").format(sql.SQL(" or ").join(parts))


def expectations():
    import great_expectations.expectations as gxe

    return [
        gxe.ExpectColumnValuesToNotBeNull(column="event_id"),
        gxe.ExpectColumnValuesToBeUnique(column="event_id"),
        gxe.ExpectColumnValuesToBeBetween(column="quantity", min_value=1),
        gxe.ExpectColumnValuesToBeBetween(column="unit_price", min_value=0, strict_min=True),
        gxe.ExpectColumnValuesToMatchRegex(column="currency", regex="^[A-Z]{3}$"),
        gxe.UnexpectedRowsExpectation(
            description="Every purchase belongs to a known customer (app.customers)",
            unexpected_rows_query="select event_id, customer_id from {batch} "
                                  "where customer_id not in (select customer_id from app.customers)"),
        gxe.UnexpectedRowsExpectation(
            description="purchased_at is not in the future (5 minutes of clock skew allowed, as the contract)",
            unexpected_rows_query="select event_id, purchased_at from {batch} "
                                  "where purchased_at > now() + interval '5 minutes'"),
    ]


def _sqlalchemy_url(dsn: str) -> str:
    from sqlalchemy.engine import URL

    params = conninfo_to_dict(dsn)
    return URL.create("postgresql+psycopg2", username=params.get("user"), password=params.get("password"),
                      host=params.get("host"), port=int(params["port"]) if params.get("port") else None,
                      database=params.get("dbname")).render_as_string(hide_password=False)


def _prune_old_pages(site: Path) -> None:
    pages = sorted((site / "validations").rglob("*.html"), key=lambda p: p.stat().st_mtime)
    for page in pages[:-KEEP_VALIDATION_PAGES]:
        page.unlink(missing_ok=True)


def run_quality_gate(dsn: str, increments: Iterable[Mapping[str, Any]], run_name: str | None = None) -> QualityResult:
    """Validate the rows the given loader runs committed. Raises QualityGateFailed if any expectation fails."""
    started = time.monotonic()
    increments = list(increments)
    query = increment_query(increments)
    if query is None:
        return QualityResult(success=True, rows=0)
    import psycopg

    with psycopg.connect(dsn) as conn:
        query_text = query.as_string(conn)
        rows = conn.execute(sql.SQL("select count(*) from ({}) increment").format(query)).fetchone()[0]

    import great_expectations as gx

    site = data_docs_dir()
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)  # no tqdm noise in task logs
    context.add_data_docs_site(site_name="staging_quality", site_config={
        "class_name": "SiteBuilder",
        "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(site)},
        "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
    })
    source = context.data_sources.add_postgres(name="warehouse", connection_string=_sqlalchemy_url(dsn))
    asset = source.add_query_asset(name="staging_purchase_events_increment", query=query_text)
    batch = asset.add_batch_definition_whole_table("increment")
    suite = context.suites.add(gx.ExpectationSuite(name=SUITE_NAME, expectations=expectations()))
    definition = context.validation_definitions.add(
        gx.ValidationDefinition(name="staging_increment", data=batch, suite=suite))
    checkpoint = context.checkpoints.add(gx.Checkpoint(
        name="staging_increment_gate", validation_definitions=[definition],
        actions=[gx.checkpoint.UpdateDataDocsAction(name="update_data_docs", site_names=["staging_quality"])],
        result_format={"result_format": "SUMMARY", "partial_unexpected_count": 5}))
    outcome = checkpoint.run(run_id=gx.RunIdentifier(run_name=run_name) if run_name else None)

    failed = []
    for validation in outcome.run_results.values():
        for result in validation.results:
            if not result.success:
                config = result.expectation_config
                where = config.kwargs.get("column") or config.description
                details = result.result or {}
                count = details.get("unexpected_count", details.get("observed_value"))
                errors = [info.get("exception_message") for info in (result.exception_info or {}).values()
                          if isinstance(info, dict) and info.get("raised_exception")]
                examples = details.get("partial_unexpected_list")
                failed.append(f"{config.type} ({where}): "
                              + (f"could not be evaluated: {str(errors[0])[:300]}" if errors else
                                 f"{count} unexpected" + (f", e.g. {str(examples)[:200]}" if examples else "")))
    _prune_old_pages(site)
    quality = QualityResult(success=outcome.success, rows=rows, failed=failed,
                            data_docs=str(site / "index.html"), seconds=round(time.monotonic() - started, 2))
    log.info("quality gate on %d rows: %s in %.1f s; Data Docs: %s", rows, "passed" if quality.success else "FAILED",
             quality.seconds, quality.data_docs)
    if not quality.success:
        raise QualityGateFailed(f"{len(failed)} expectation(s) failed on {rows} newly loaded staging rows: "
                                + "; ".join(failed) + f". Data Docs: {quality.data_docs}")
    return quality
