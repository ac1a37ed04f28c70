"""Liveness and readiness, for supervisors and load balancers."""

from __future__ import annotations

import asyncio
from functools import partial

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from psycopg_pool import AsyncConnectionPool

from ingest_api import data
from ingest_api.accept.producer import PurchaseProducer
from ingest_api.deps import PoolDep, ProducerDep
from ingest_api.schemas import Health, Readiness

router = APIRouter(tags=["health"])

CHECK_TIMEOUT_SECONDS = 2.0


@router.get("/healthz", response_model=Health, summary="The process is up")
async def healthz() -> Health:
    return Health()


async def _database(pool: AsyncConnectionPool) -> str:
    async with pool.connection(timeout=CHECK_TIMEOUT_SECONDS) as conn:
        await data.ping(conn)
    return "ok"


async def _broker(producer: PurchaseProducer) -> str:
    if await asyncio.to_thread(producer.broker_reachable, CHECK_TIMEOUT_SECONDS):
        return "ok"
    return f"topic {producer.topic!r} has no partitions on the broker"


@router.get(
    "/readyz",
    response_model=Readiness,
    responses={503: {"model": Readiness, "description": "The database or the broker is unreachable."}},
    summary="The database and the broker are reachable",
)
async def readyz(pool: PoolDep, producer: ProducerDep):
    checks = {}
    for name, check in (("database", partial(_database, pool)), ("broker", partial(_broker, producer))):
        try:
            checks[name] = await asyncio.wait_for(check(), CHECK_TIMEOUT_SECONDS + 1)
        except Exception as exc:  # noqa: BLE001 - any failure means not ready; say which
            checks[name] = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    ready = all(result == "ok" for result in checks.values())
    body = Readiness(status="ready" if ready else "not ready", checks=checks)
    return JSONResponse(body.model_dump(), status_code=200 if ready else 503)
