"""Fixtures for the loader tests: a topic of their own per test, and customers.

Each test gets a fresh topic so that its offsets, staging rows and rejections are its own even though the
session's broker and warehouse are shared with the other test folders.
"""
from __future__ import annotations

import uuid

import pytest

from .helpers import Staged, add_customers, create_topic


@pytest.fixture
def topic(broker) -> str:
    return create_topic(broker.bootstrap)


@pytest.fixture
def staged(warehouse_dsn, topic) -> Staged:
    return Staged(warehouse_dsn, topic)


@pytest.fixture
def customers(warehouse_dsn) -> list[uuid.UUID]:
    return add_customers(warehouse_dsn, 5)
