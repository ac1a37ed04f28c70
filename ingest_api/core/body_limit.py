"""Refusing request bodies over a size limit (413) before reading them, as a pure ASGI middleware."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ingest_api import errors


class BodySizeLimit:
    """A declared Content-Length over the limit is answered 413 at once; a body without one (chunked) is
    counted as it arrives and cut off with 413 as soon as it passes the limit."""

    def __init__(self, app: ASGIApp, default_limit: int, limits_by_path: dict[str, int] | None = None):
        self.app = app
        self.default_limit = default_limit
        self.limits_by_path = limits_by_path or {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        limit = self.limits_by_path.get(scope["path"], self.default_limit)
        for name, value in scope["headers"]:
            if name == b"content-length":
                if value.isdigit() and int(value) > limit:
                    return await self._too_large(limit, send)
                return await self.app(scope, receive, send)  # the server holds the body to its length
        received = 0

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    # FastAPI turns this into the 413 response (it lets HTTPExceptions from reading through).
                    raise errors.body_too_large(limit)
            return message

        await self.app(scope, counting_receive, send)

    @staticmethod
    async def _too_large(limit: int, send: Send) -> None:
        body = b'{"detail":"%s"}' % errors.body_too_large(limit).detail.encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
