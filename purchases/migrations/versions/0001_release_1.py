"""The warehouse as the first release made it (its purchases/sql/schema.sql, verbatim).

Idempotent, like that file was: a warehouse that release (or an earlier one) created without Alembic is
brought to exactly this schema and then upgraded like any other.

Revision ID: 0001
Revises:
Create Date: 2026-11-24
"""

from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

RELEASE_1_SCHEMA = r"""
-- Warehouse tables owned by the application and the loader (dbt owns `marts`).
-- Idempotent: `make up` and the test fixtures run it on every start.
create schema if not exists app;
create schema if not exists staging;
create schema if not exists marts;

create table if not exists app.customers (
    customer_id   uuid primary key,
    username      text not null unique,
    password_hash text not null,
    created_at    timestamptz not null default now(),
    updated_at    timestamptz not null default now()
);

-- One row per accepted purchase event; the first copy of an event_id wins.
create table if not exists staging.purchase_events (
    event_id        uuid primary key,
    customer_id     uuid not null,
    product_name    text not null,
    description     text,
    quantity        integer not null,
    unit_price      numeric(12, 2) not null,
    currency        char(3) not null,
    purchased_at    timestamptz not null,
    schema_version  integer not null,
    extra           jsonb not null default '{}'::jsonb,   -- unknown fields, kept for forward compatibility
    kafka_topic     text not null,
    kafka_partition integer not null,
    kafka_offset    bigint not null,
    loaded_at       timestamptz not null default now()
);
create index if not exists purchase_events_customer_idx
    on staging.purchase_events (customer_id, purchased_at desc, event_id desc);
create index if not exists purchase_events_loaded_at_idx on staging.purchase_events (loaded_at);

-- Records the loader could not accept, kept losslessly with the reason.
create table if not exists staging.purchase_events_rejected (
    rejection_id    bigserial primary key,
    event_id        uuid,          -- when the record carried a readable one
    customer_id     uuid,          -- likewise
    reason          text not null,
    raw_key         bytea,
    raw_value       bytea,
    kafka_topic     text not null,
    kafka_partition integer not null,
    kafka_offset    bigint not null,
    rejected_at     timestamptz not null default now(),
    replayed_at     timestamptz,   -- set when a replay re-drove it
    unique (kafka_topic, kafka_partition, kafka_offset)
);
create index if not exists purchase_events_rejected_event_idx on staging.purchase_events_rejected (event_id);
create index if not exists purchase_events_rejected_customer_idx on staging.purchase_events_rejected (customer_id);

-- The loader's source of truth for progress: next offset to read, per partition.
create table if not exists staging.kafka_offsets (
    kafka_topic     text not null,
    kafka_partition integer not null,
    next_offset     bigint not null,
    updated_at      timestamptz not null default now(),
    primary key (kafka_topic, kafka_partition)
);
-- The topic's id (Kafka topic ids change when a topic is recreated, e.g. by an in-memory broker's restart):
-- when it changes, the stored offsets belong to a log that no longer exists.
alter table staging.kafka_offsets add column if not exists topic_id text;
"""


def upgrade() -> None:
    op.execute(RELEASE_1_SCHEMA)


def downgrade() -> None:
    raise NotImplementedError("the first release's schema is the base: drop the database instead")
