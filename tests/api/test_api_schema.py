"""Schemathesis against the API's OpenAPI schema, calling the live server: no 5xx, and every answer
(status code, content type, headers, body) as the schema says."""

from __future__ import annotations

import httpx
import pytest
import schemathesis
from api_support import sign_up
from hypothesis import HealthCheck, settings
from schemathesis.checks import positive_data_acceptance

from ingest_api.main import create_app

# The schema comes from the app itself (the same document /openapi.json serves; checked below), so that the
# tests can be generated at collection time, before the server runs.
OPENAPI = create_app().openapi()
schema = schemathesis.openapi.from_dict(OPENAPI)


@pytest.fixture(scope="module")
def bearer(api):
    with httpx.Client(base_url=api.url, timeout=30) as client:
        return sign_up(client, "fuzz").headers


def test_the_server_serves_this_schema(api):
    assert httpx.get(f"{api.url}/openapi.json").json() == OPENAPI


@pytest.mark.slow
@schema.parametrize()
@settings(
    max_examples=30,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large],
)
def test_the_api_keeps_its_schema_and_never_fails_with_5xx(case, api, bearer):
    # Not `positive_data_acceptance`: some rules are beyond JSON Schema (at most 2 decimal places, not in the
    # future, a cursor must be one the API gave out), so schema-valid input can rightly be refused with 422.
    case.call_and_validate(base_url=api.url, headers=bearer, excluded_checks=[positive_data_acceptance])
