"""Every setting of the product, read from environment variables with working local defaults."""
from __future__ import annotations

from functools import lru_cache

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from purchases.contract import TOPIC


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=None, extra="ignore")

    # The warehouse: app.customers, staging.*, marts.*
    warehouse_dsn: str = Field("postgresql://postgres@127.0.0.1:5432/purchases", alias="WAREHOUSE_DSN")
    kafka_bootstrap_servers: str = Field("127.0.0.1:9092", alias="KAFKA_BOOTSTRAP_SERVERS")
    purchases_topic: str = Field(TOPIC, alias="PURCHASES_TOPIC")
    purchases_partitions: int = Field(3, alias="PURCHASES_PARTITIONS")

    api_host: str = Field("127.0.0.1", alias="API_HOST")
    api_port: int = Field(8000, alias="API_PORT")
    jwt_secret: str = Field("", alias="JWT_SECRET")
    jwt_ttl_seconds: int = Field(3600, alias="JWT_TTL_SECONDS")
    # Produce is acknowledged by the broker before the API answers; past this, the API answers 503.
    produce_timeout_seconds: float = Field(5.0, alias="PRODUCE_TIMEOUT_SECONDS")


@lru_cache
def get_settings() -> Settings:
    return Settings()
