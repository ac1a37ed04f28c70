"""The ingest API: `uvicorn ingest_api.main:app`. The web page is at `/`, the OpenAPI docs at `/docs`.

create_app puts the app together: the routers, the body size limit, the error handlers. A map of the
package is in ingest_api/__init__.py.
"""

from __future__ import annotations

from functools import partial

from fastapi import FastAPI

from ingest_api import errors, health, page
from ingest_api.accept import routes as accept
from ingest_api.accept.hot_path import BuyRoute
from ingest_api.accounts import routes as accounts
from ingest_api.core.body_limit import BodySizeLimit
from ingest_api.deps import lifespan
from ingest_api.serve import routes as serve
from purchases.settings import Settings, get_settings

DESCRIPTION = """\
Customers sign up, log in (OAuth2 password form -> bearer token), buy, and read back what they bought and
spent. A purchase is answered `202 accepted` once the broker has acknowledged it; the pipeline records it
within seconds, after which it is listed and counted. Money is written as decimal strings ("24.70").
"""


def create_app(settings: Settings | None = None) -> FastAPI:
    app = FastAPI(
        title="Purchases Recorder ingest API",
        version="1.0.0",
        description=DESCRIPTION,
        lifespan=lifespan,
        exception_handlers=errors.EXCEPTION_HANDLERS,
    )
    app.state.settings = settings = settings or get_settings()
    app.add_middleware(
        BodySizeLimit,
        default_limit=settings.max_body_bytes,
        limits_by_path={"/purchases/batch": settings.max_batch_body_bytes},
    )
    for router in (accept.router, accounts.router, serve.router, health.router, page.router):
        app.include_router(router)
    # Routes are matched in order; the buy routes take nearly all requests, so they are tried first.
    app.router.routes.sort(key=lambda route: not isinstance(route, BuyRoute))
    app.openapi = partial(accept.openapi, app)
    return app


app = create_app()
