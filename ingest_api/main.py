"""The ingest API: `python -m ingest_api` (uvicorn with the server's limits, see __main__.py). The web page is
at `/`, the OpenAPI docs at `/docs`.

create_app puts the app together: the routers, the body size limit, the error handlers. A map of the
package is in ingest_api/__init__.py. `GuardedHttpToolsProtocol` is the HTTP protocol the server runs:
uvicorn's own, with what it lacks against clients that hold connections without sending requests.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from functools import partial
from typing import Any

from fastapi import FastAPI
from uvicorn.config import Config
from uvicorn.protocols.http.flow_control import service_unavailable
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

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


# The most bytes a request's head (request line and headers) may take, as uvicorn's h11 protocol bounds it
# (its h11_max_incomplete_event_size); httptools itself has no bound. Beyond: 431 and the connection closed.
MAX_HEAD_BYTES = 16 * 1024


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's default HTTP/1.1 protocol (httptools), guarded against idle, trickling and hoarding clients.

    uvicorn 0.54 has no header timeout: its keep-alive timer starts only after a response, and any byte
    received stops it. A connection that never sends a request, or sends its head a byte at a time, is kept
    forever. And its `limit_concurrency` counts open connections, idle ones too: a few thousand idle
    connections make it answer 503 to everyone else. Here:

    * **The head clock.** From the moment a connection opens, and again after each response, the next
      request's head must be complete within `timeout_keep_alive` seconds (API_TIMEOUT_KEEP_ALIVE_SECONDS),
      or the connection is closed. Bytes that trickle in do not stop the clock; only a complete head does.
      This is uvicorn's own keep-alive timer, no longer reset by data: no timer more per request.
    * **The head's size**: at most `h11_max_incomplete_event_size` bytes (default MAX_HEAD_BYTES), else 431.
    * **The concurrency limit** (`limit_concurrency`, API_LIMIT_CONCURRENCY) counts requests in progress:
      beyond it, a new request is answered 503 at once, as uvicorn does. Connections are held to the same
      number: one more closes the connection that has waited longest for a request, so idle connections
      give way to new ones instead of locking them out.
    """

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.request_limit = self.limit_concurrency
        self.limit_concurrency = None  # the base class's check, which counts idle connections
        self.max_head_bytes = config.h11_max_incomplete_event_size or MAX_HEAD_BYTES
        self.head_bytes = 0
        self.in_head = False
        # The server's connections that wait for a request's head, the longest-waiting first.
        self.waiting: OrderedDict[GuardedHttpToolsProtocol, None] = server_state.__dict__.setdefault(
            "waiting_for_a_request", OrderedDict()
        )

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if self.request_limit is not None and len(self.connections) > self.request_limit and self.waiting:
            longest_waiting, _ = self.waiting.popitem(last=False)
            longest_waiting.transport.close()
        self._start_head_clock()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_head_clock()
        super().connection_lost(exc)

    def _start_head_clock(self) -> None:
        self.timeout_keep_alive_task = self.loop.call_later(self.timeout_keep_alive, self.timeout_keep_alive_handler)
        self.waiting[self] = None

    def _stop_head_clock(self) -> None:
        if self.timeout_keep_alive_task is not None:
            self.timeout_keep_alive_task.cancel()
            self.timeout_keep_alive_task = None
        self.waiting.pop(self, None)

    def _unset_keepalive_if_required(self) -> None:
        """The base class stops the keep-alive timer at any byte received; here only a complete head does."""

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.in_head:
            self.head_bytes += len(data)
            if self.head_bytes > self.max_head_bytes and not self.transport.is_closing():
                self._refuse(431, b"Request Header Fields Too Large")

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.in_head, self.head_bytes = True, 0

    def on_headers_complete(self) -> None:
        self.in_head = False
        self._stop_head_clock()
        if self.request_limit is not None and len(self.tasks) >= self.request_limit:
            self.logger.warning("Exceeded concurrency limit.")
            self.app = service_unavailable
            try:
                super().on_headers_complete()
            finally:
                self.app = self.config.loaded_app
        else:
            super().on_headers_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self.timeout_keep_alive_task is not None:  # armed by the base class: waiting for the next request
            self.waiting[self] = None

    def _refuse(self, status_code: int, reason: bytes) -> None:
        self.transport.write(
            b"HTTP/1.1 %d %s\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: %d\r\n"
            b"connection: close\r\n\r\n%s" % (status_code, reason, len(reason), reason)
        )
        self.transport.close()
