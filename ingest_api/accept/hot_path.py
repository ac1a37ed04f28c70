"""The route class of the buy endpoints: declared like any FastAPI route, resolved by hand per request.

FastAPI's per-request dependency solving (the bearer scheme, the customer, the producer, the
Idempotency-Key header, an exit stack per request) costs about as much as everything else on the purchase
path together: authenticating offline, validating, building and producing the event. So these routes keep
their declared signature, which documents them in OpenAPI and /docs, but supply its four parameters
directly, with the same rules and the same errors as the declared dependencies. Their bodies are read and
validated by hand too (`read_body`, `parse_json_body`).
"""

from __future__ import annotations

import inspect
from typing import Annotated, Any, TypeVar

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from fastapi.security.utils import get_authorization_scheme_param
from pydantic import BaseModel, Field, TypeAdapter, ValidationError
from starlette.requests import ClientDisconnect
from starlette.routing import request_response

from ingest_api import errors
from ingest_api.deps import customer_for_token

IDEMPOTENCY_KEY_MAX_LENGTH = 200
IdempotencyKeyValue = Annotated[str, Field(min_length=1, max_length=IDEMPOTENCY_KEY_MAX_LENGTH)]
_idempotency_key = TypeAdapter(IdempotencyKeyValue)

HOT_PATH_PARAMETERS = {"request", "customer_id", "producer", "idempotency_key"}


def _idempotency_key_of(raw: bytes | None) -> str | None:
    if raw is None:
        return None
    try:
        return _idempotency_key.validate_python(raw.decode("latin-1"))
    except ValidationError as exc:
        details = exc.errors(include_url=False, include_context=False)
        for error in details:
            error["loc"] = ("header", "Idempotency-Key")
        raise RequestValidationError(details) from None


async def read_body(request: Request) -> bytes:
    """The request body; like `Request.body()` without its async generator, as a small body comes whole."""
    message = await request.receive()
    body = message.get("body", b"")
    if message["type"] == "http.request" and not message.get("more_body", False):
        return body
    chunks = [body]
    while message["type"] == "http.request" and message.get("more_body", False):
        message = await request.receive()
        chunks.append(message.get("body", b""))
    if message["type"] == "http.disconnect":
        raise ClientDisconnect()
    return b"".join(chunks)


Model = TypeVar("Model", bound=BaseModel)
ECHO_LIMIT = 200


def parse_json_body(model: type[Model], body: bytes) -> Model:
    """Validate a raw JSON body straight from bytes (pydantic's parser, about twice as fast as json.loads
    and validating the dict); errors come out like FastAPI's own 422s, each naming its field."""
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:
        details = exc.errors(include_url=False, include_context=False)
        for error in details:
            error["loc"] = ("body", *error["loc"])
            error["input"] = _echo(error.get("input"))
        raise RequestValidationError(details) from None


def _echo(value):
    """What of a refused input goes back in the error: a short scalar; not the raw body or a whole list."""
    if isinstance(value, (bytes, bytearray)):
        value = bytes(value[:ECHO_LIMIT]).decode("utf-8", "replace")
    if isinstance(value, str):
        return value if len(value) <= ECHO_LIMIT else value[:ECHO_LIMIT] + "…"
    return value if value is None or isinstance(value, (int, float)) else None


class BuyRoute(APIRoute):
    def __init__(self, path: str, endpoint: Any, **kwargs: Any):
        super().__init__(path, endpoint, **kwargs)
        declared = set(inspect.signature(endpoint).parameters)
        if declared != HOT_PATH_PARAMETERS:
            raise TypeError(
                f"{endpoint.__name__} must take exactly {sorted(HOT_PATH_PARAMETERS)}; it takes {sorted(declared)}"
            )

        async def handle(request: Request) -> Any:
            authorization = key = None
            for name, value in request.scope["headers"]:
                if name == b"authorization":
                    authorization = value
                elif name == b"idempotency-key":
                    key = value
            scheme, token = get_authorization_scheme_param(authorization.decode("latin-1") if authorization else None)
            if scheme.lower() != "bearer" or not token:
                raise errors.missing_token()
            customer_id = customer_for_token(request, token)
            return await endpoint(
                request=request,
                customer_id=customer_id,
                producer=request.app.state.producer,
                idempotency_key=_idempotency_key_of(key),
            )

        # Starlette's plain request/response wrapper: the app's exception handlers (401, 422, 503 ...)
        # apply as on any other route.
        self.app = request_response(handle)
