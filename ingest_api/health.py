"""Liveness and readiness, for supervisors and load balancers.

/readyz is anonymous: it says which dependency is down ("unavailable"), never why. Why goes to the log, once
when a dependency goes down (and again if the reason changes) and once when it is back, not at every probe.
"""

from __future__ import annotations

import asyncio
import logging
from functools import partial

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from psycopg_pool import AsyncConnectionPool

from ingest_api import data
from ingest_api.accept.producer import PurchaseProducer
from ingest_api.deps import PoolDep, ProducerDep
from ingest_api.schemas import Health, Readiness

log = logging.getLogger(__name__)

router = APIRouter(tags=["health"])

CHECK_TIMEOUT_SECONDS = 2.0
OK, UNAVAILABLE = "ok", "unavailable"
# The last failure logged per dependency (None: it was fine), in this worker.
_last_failure: dict[str, str | None] = {}


@router.get("/healthz", response_model=Health, summary="The process is up")
async def healthz() -> Health:
    return Health()


class NotReady(Exception):
    """A dependency answered, but not as it must (e.g. the topic has no partitions)."""


async def _database(pool: AsyncConnectionPool) -> None:
    async with pool.connection(timeout=CHECK_TIMEOUT_SECONDS) as conn:
        await data.ping(conn)


async def _broker(producer: PurchaseProducer) -> None:
    if not await asyncio.to_thread(producer.broker_reachable, CHECK_TIMEOUT_SECONDS):
        raise NotReady(f"topic {producer.topic!r} has no partitions on the broker")


def _note(name: str, failure: str | None) -> None:
    """Log a dependency's state when it changes: the details are for the operators, not for callers."""
    if _last_failure.get(name) == failure:
        return
    if failure is not None:
        log.warning("readiness: %s unavailable: %s", name, failure)
    elif _last_failure.get(name) is not None:
        log.info("readiness: %s available again", name)
    _last_failure[name] = failure


@router.get(
    "/readyz",
    response_model=Readiness,
    responses={
        503: {
            "model": Readiness,
            "description": 'The database or the broker is unreachable: its check says "unavailable" (the log '
            "says why).",
        }
    },
    summary="The database and the broker are reachable",
)
async def readyz(pool: PoolDep, producer: ProducerDep):
    checks = {}
    for name, check in (("database", partial(_database, pool)), ("broker", partial(_broker, producer))):
        try:
            await asyncio.wait_for(check(), CHECK_TIMEOUT_SECONDS + 1)
        except Exception as exc:  # noqa: BLE001 - any failure means not ready; say which, log why
            checks[name] = UNAVAILABLE
            _note(name, f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)
        else:
            checks[name] = OK
            _note(name, None)
    ready = all(result == OK for result in checks.values())
    body = Readiness(status="ready" if ready else "not ready", checks=checks)
    return JSONResponse(body.model_dump(), status_code=200 if ready else 503)
