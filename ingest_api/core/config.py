"""The API's settings: the product's one `Settings` class, extended with what only the API reads."""
from __future__ import annotations

from functools import lru_cache

from pydantic import Field

from purchases.settings import Settings


class ApiSettings(Settings):
    """`purchases.settings.Settings` plus the API's own knobs (same env-var mechanism)."""

    # Bodies larger than these are refused with 413 before they are read in full.
    max_body_bytes: int = Field(64 * 1024, alias="API_MAX_BODY_BYTES")
    max_batch_body_bytes: int = Field(8 * 1024 * 1024, alias="API_MAX_BATCH_BODY_BYTES")
    # Wrong passwords per username before /auth/token answers 429, and the window they count in.
    login_max_failures: int = Field(5, alias="API_LOGIN_MAX_FAILURES")
    login_failure_window_seconds: int = Field(15 * 60, alias="API_LOGIN_FAILURE_WINDOW_SECONDS")
    # Told to clients in Retry-After when the broker did not take an event.
    broker_retry_after_seconds: int = Field(2, alias="API_BROKER_RETRY_AFTER_SECONDS")
    db_pool_min_size: int = Field(1, alias="API_DB_POOL_MIN_SIZE")
    db_pool_max_size: int = Field(8, alias="API_DB_POOL_MAX_SIZE")
    # librdkafka waits this long to fill a batch; small keeps the 202 fast, the broker batches in flight anyway.
    producer_linger_ms: float = Field(1.0, alias="API_PRODUCER_LINGER_MS")


@lru_cache
def get_api_settings() -> ApiSettings:
    return ApiSettings()
