"""The quality gate: a Great Expectations suite run on exactly the staging rows of the batches not yet passed.

The suite is the event contract's rules (purchases.contract), checked again on what Postgres holds: a
second line of defence behind the loader, which stores only what the contract accepts. A failed
expectation raises `QualityGateFailed`, which fails the Airflow task and so holds back the Asset event the
transform DAG waits for; the batches stay unpassed, so the marts never read their rows. Every run that checks
rows writes Data Docs HTML: built in a working copy on the machine that runs it (default
`gx/uncommitted/data_docs/staging_quality/`, `GX_DATA_DOCS_DIR`), published to the warehouse (`pages.data_docs`,
purchases/pages.py), from where the Airflow UI serves them (Browse -> Data Docs), whichever worker ran it.

Great Expectations takes ~10 s of CPU just to import on this machine, so the DAG runs this once per DAG run
in its own task, never inside the loader's batch loop.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from psycopg.conninfo import conninfo_to_dict

from purchases import contract
from purchases.check.batches import Increment, mark_passed, unchecked
from purchases.settings import Settings

log = logging.getLogger(__name__)

SUITE_NAME = "staging_purchase_events_increment"
# Data Docs keeps one page per validation; older pages than this many are removed so the folder stays small.
KEEP_VALIDATION_PAGES = 200


class QualityGateFailed(RuntimeError):
    """Newly loaded staging rows broke an expectation; the message lists which, with examples."""


@dataclass
class QualityResult:
    success: bool
    rows: int
    batches: int = 0
    failed: list[str] = field(default_factory=list)
    data_docs: str | None = None
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def data_docs_dir() -> Path:
    return Settings().gx_data_docs_dir  # read when asked: a test points it elsewhere


def expectations():
    """The contract's rules as expectations on the rows Postgres holds (NUL and lone surrogates cannot be
    there at all: Postgres text refuses them)."""
    import great_expectations.expectations as gxe

    rules = contract.dbt_contract()
    return [
        gxe.ExpectColumnValuesToNotBeNull(column="event_id"),
        gxe.ExpectColumnValuesToBeUnique(column="event_id"),
        gxe.ExpectColumnValuesToBeInSet(column="schema_version", value_set=[contract.SCHEMA_VERSION]),
        gxe.ExpectColumnValuesToBeBetween(column="quantity", min_value=1, max_value=contract.MAX_QUANTITY),
        gxe.ExpectColumnValuesToBeBetween(
            column="unit_price", min_value=0, strict_min=True, max_value=float(contract.MAX_UNIT_PRICE)
        ),
        gxe.UnexpectedRowsExpectation(
            description=f"unit_price has at most {contract.PRICE_DECIMAL_PLACES} decimal places",
            unexpected_rows_query="select event_id, unit_price from {batch} "
            f"where unit_price <> round(unit_price, {contract.PRICE_DECIMAL_PLACES})",
        ),
        gxe.ExpectColumnValuesToMatchRegex(column="currency", regex=contract.CURRENCY_PATTERN),
        gxe.ExpectColumnValueLengthsToBeBetween(
            column="product_name", min_value=1, max_value=contract.MAX_PRODUCT_NAME
        ),
        gxe.ExpectColumnValuesToNotMatchRegex(column="product_name", regex=rules["name_forbidden_pattern"]),
        gxe.ExpectColumnValueLengthsToBeBetween(column="description", max_value=contract.MAX_DESCRIPTION),
        gxe.ExpectColumnValuesToNotMatchRegex(column="description", regex=rules["description_forbidden_pattern"]),
        gxe.UnexpectedRowsExpectation(
            description="Every purchase belongs to a known customer (app.customers)",
            unexpected_rows_query="select event_id, customer_id from {batch} "
            "where customer_id not in (select customer_id from app.customers)",
        ),
        gxe.UnexpectedRowsExpectation(
            description=f"purchased_at is from {rules['earliest_purchased_at']} to "
            f"{rules['future_tolerance_seconds']} s after the event was loaded, as the contract says",
            unexpected_rows_query="select event_id, purchased_at from {batch} "
            f"where purchased_at < '{rules['earliest_purchased_at']}'::timestamptz "
            f"or purchased_at > loaded_at + interval '{rules['future_tolerance_seconds']} "
            "seconds'",
        ),
    ]


def _sqlalchemy_url(dsn: str) -> str:
    from sqlalchemy.engine import URL

    params = conninfo_to_dict(dsn)
    return URL.create(
        "postgresql+psycopg2",
        username=params.get("user"),
        password=params.get("password"),
        host=params.get("host"),
        port=int(params["port"]) if params.get("port") else None,
        database=params.get("dbname"),
    ).render_as_string(hide_password=False)


def _prune_old_pages(site: Path) -> None:
    pages = sorted((site / "validations").rglob("*.html"), key=lambda p: p.stat().st_mtime)
    for page in pages[:-KEEP_VALIDATION_PAGES]:
        page.unlink(missing_ok=True)


def run_quality_gate(dsn: str, run_name: str | None = None) -> QualityResult:
    """Validate the rows of every batch not passed yet; mark the batches passed. Raises QualityGateFailed
    (and leaves them unpassed) if any expectation fails."""
    started = time.monotonic()
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        increment = unchecked(conn)
        if not increment.batch_ids:
            return QualityResult(success=True, rows=0, batches=0)
        if increment.rows == 0:  # batches whose every record was rejected or a duplicate: nothing to check
            mark_passed(conn, increment)
            return QualityResult(success=True, rows=0, batches=len(increment.batch_ids))
        query_text = increment.query().as_string(conn)
        rows = increment.rows

    import great_expectations as gx

    from purchases import pages

    site = data_docs_dir()
    # The site's index lists the validation pages it finds in the folder: first bring in those that runs on
    # other machines published.
    pages.restore(dsn, "data_docs", site)
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)  # no tqdm noise in task logs
    context.add_data_docs_site(
        site_name="staging_quality",
        site_config={
            "class_name": "SiteBuilder",
            "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(site)},
            "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
        },
    )
    source = context.data_sources.add_postgres(name="warehouse", connection_string=_sqlalchemy_url(dsn))
    asset = source.add_query_asset(name="staging_purchase_events_increment", query=query_text)
    batch = asset.add_batch_definition_whole_table("increment")
    suite = context.suites.add(gx.ExpectationSuite(name=SUITE_NAME, expectations=expectations()))
    definition = context.validation_definitions.add(
        gx.ValidationDefinition(name="staging_increment", data=batch, suite=suite)
    )
    checkpoint = context.checkpoints.add(
        gx.Checkpoint(
            name="staging_increment_gate",
            validation_definitions=[definition],
            actions=[gx.checkpoint.UpdateDataDocsAction(name="update_data_docs", site_names=["staging_quality"])],
            result_format={"result_format": "SUMMARY", "partial_unexpected_count": 5},
        )
    )
    outcome = checkpoint.run(run_id=gx.RunIdentifier(run_name=run_name) if run_name else None)

    failed = []
    for validation in outcome.run_results.values():
        for result in validation.results:
            if not result.success:
                config = result.expectation_config
                where = config.kwargs.get("column") or config.description
                details = result.result or {}
                count = details.get("unexpected_count", details.get("observed_value"))
                errors = [
                    info.get("exception_message")
                    for info in (result.exception_info or {}).values()
                    if isinstance(info, dict) and info.get("raised_exception")
                ]
                examples = details.get("partial_unexpected_list")
                failed.append(
                    f"{config.type} ({where}): "
                    + (
                        f"could not be evaluated: {str(errors[0])[:300]}"
                        if errors
                        else f"{count} unexpected" + (f", e.g. {str(examples)[:200]}" if examples else "")
                    )
                )
    _prune_old_pages(site)
    published = pages.publish_directory(dsn, "data_docs", site)
    quality = QualityResult(
        success=outcome.success,
        rows=rows,
        batches=len(increment.batch_ids),
        failed=failed,
        data_docs=str(site / "index.html"),
        seconds=round(time.monotonic() - started, 2),
    )
    log.info(
        "quality gate on %d rows: %s in %.1f s; Data Docs: %s, published to the warehouse (pages.data_docs: "
        "%d files written, %d deleted; the Airflow UI's Browse -> Data Docs)",
        rows,
        "passed" if quality.success else "FAILED",
        quality.seconds,
        quality.data_docs,
        published.written,
        published.deleted,
    )
    if not quality.success:
        raise QualityGateFailed(
            f"{len(failed)} expectation(s) failed on the {rows} staging rows of batches {_span(increment)}: "
            + "; ".join(failed)
            + f". Data Docs: {quality.data_docs}. These batches stay out of the marts until "
            "their rows are fixed and the failed task is cleared."
        )
    with psycopg.connect(dsn, autocommit=True) as conn:
        mark_passed(conn, increment)
    return quality


def _span(increment: Increment) -> str:
    ids = increment.batch_ids
    return f"{ids[0]}" if len(ids) == 1 else f"{ids[0]}..{ids[-1]} ({len(ids)} batches)"
