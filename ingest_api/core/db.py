"""The connection pool to the warehouse (psycopg 3, async): app.customers, staging.*, marts.*."""

from __future__ import annotations

from psycopg_pool import AsyncConnectionPool

from purchases.settings import Settings


def make_pool(settings: Settings) -> AsyncConnectionPool:
    # Opened in the app's lifespan without waiting, so the API starts (and /healthz answers) while the
    # database is still coming up; requests that need it meanwhile answer 503.
    return AsyncConnectionPool(
        settings.dsn_as("api"),  # the API's own role: customers, staging's purchases, the marts; nothing more
        min_size=settings.db_pool_min_size,
        max_size=settings.db_pool_max_size,
        open=False,
        timeout=5.0,
        kwargs={"autocommit": True, "application_name": "ingest_api"},
        name="warehouse",
    )
