"""The ingest API: `uvicorn ingest_api.main:app`. The web page is at `/`, the OpenAPI docs at `/docs`."""
from __future__ import annotations

import gc
import logging
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path

import anyio
import psycopg
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse
from psycopg_pool import PoolTimeout

from ingest_api.api.hot_path import BuyRoute
from ingest_api.api.routes import auth, customers, health, purchases
from ingest_api.core.body_limit import BodySizeLimit
from ingest_api.core.config import ApiSettings, get_api_settings
from ingest_api.core.db import make_pool
from ingest_api.core.login_limiter import LoginLimiter
from ingest_api.core.security import TokenCodec
from ingest_api.producer import BrokerUnavailable, PurchaseProducer
from ingest_api.schemas import PurchaseBatch, PurchaseRequest

log = logging.getLogger(__name__)
PAGE = Path(__file__).resolve().parent / "static" / "index.html"

DESCRIPTION = """\
Customers sign up, log in (OAuth2 password form -> bearer token), buy, and read back what they bought and
spent. A purchase is answered `202 accepted` once the broker has acknowledged it; the pipeline records it
within seconds, after which it is listed and counted. Money is written as decimal strings ("24.70").
"""


def create_app(settings: ApiSettings | None = None) -> FastAPI:
    settings = settings or get_api_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        app.state.settings = settings
        app.state.tokens = TokenCodec(settings.jwt_secret, settings.jwt_ttl_seconds)
        app.state.login_limiter = LoginLimiter(settings.login_max_failures, settings.login_failure_window_seconds)
        # Password hashing takes tens of ms of CPU and memory each: a few at a time, off the event loop.
        slow_limiter = anyio.CapacityLimiter(2)
        app.state.run_slow = lambda fn, *args: anyio.to_thread.run_sync(partial(fn, *args), limiter=slow_limiter)
        app.state.pool = make_pool(settings)
        await app.state.pool.open(wait=False)
        app.state.producer = PurchaseProducer(settings.kafka_bootstrap_servers, settings.purchases_topic,
                                              settings.produce_timeout_seconds, settings.producer_linger_ms)
        await app.state.producer.start()
        # What exists now lives as long as the process: keep it out of the garbage collector's full
        # passes, which would otherwise walk it all, every time, in the middle of requests.
        gc.freeze()
        try:
            yield
        finally:
            await app.state.producer.stop()
            await app.state.pool.close()

    app = FastAPI(title="Purchases Recorder ingest API", version="1.0.0", description=DESCRIPTION,
                  lifespan=lifespan)
    app.add_middleware(BodySizeLimit, default_limit=settings.max_body_bytes,
                       limits_by_path={"/purchases/batch": settings.max_batch_body_bytes})
    for router in (customers.router, auth.router, purchases.buy_router, purchases.router, health.router):
        app.include_router(router)
    # Routes are matched in order; the buy routes take nearly all requests, so they are tried first.
    app.router.routes.sort(key=lambda route: not isinstance(route, BuyRoute))

    @app.exception_handler(BrokerUnavailable)
    async def broker_unavailable(_request: Request, exc: BrokerUnavailable) -> JSONResponse:
        return JSONResponse(
            {"detail": f"The purchase was not accepted, the broker did not acknowledge it ({exc}). "
                       "Retry later with the same Idempotency-Key."},
            status_code=503, headers={"Retry-After": str(settings.broker_retry_after_seconds)})

    @app.exception_handler(psycopg.OperationalError)
    @app.exception_handler(PoolTimeout)
    async def database_unavailable(_request: Request, exc: Exception) -> JSONResponse:
        log.warning("database unavailable: %s", exc)
        return JSONResponse({"detail": "The database is unavailable; retry later."}, status_code=503,
                            headers={"Retry-After": "5"})

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page() -> HTMLResponse:
        return HTMLResponse(PAGE.read_bytes())

    def openapi() -> dict:
        # The purchase bodies are validated by hand from raw bytes (the hot path); their schemas are
        # added here so that /docs and schema-driven clients know them.
        if app.openapi_schema is None:
            schema = FastAPI.openapi(app)
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            for model in (PurchaseRequest, PurchaseBatch):
                model_schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
                components.update(model_schema.pop("$defs", {}))
                components[model.__name__] = model_schema
        return app.openapi_schema

    app.openapi = openapi
    return app


app = create_app()
