"""One contract, per-record isolation, a gate the marts wait for, visible lag.

* staging.kafka_log_ends: what the loader last saw of each partition's log (its lag, with kafka_offsets).
* staging.loaded_batches: every batch the loader or a replay committed, the quality gate's to-do list;
  checked_at when the gate passed it. purchase_events and purchase_events_rejected carry their batch_id.
  Rows loaded before batches were recorded get one legacy batch, counted as passed.
* staging.purchase_events_passed: the events whose batch passed the gate, all the marts may read.
* Rejections are no longer unique by topic, partition and offset: the embedded broker starts a new log at
  offset 0 after each restart, and a rejection there is kept too.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01
"""

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

UPGRADE = r"""
-- What the loader last saw of each partition's log (the high watermark of its latest fetch) and when: with
-- kafka_offsets (what it committed, and when: updated_at) this gives each partition's lag. Written outside
-- the batch transactions, so a partition whose batches keep failing still shows how far behind it is.
create table if not exists staging.kafka_log_ends (
    kafka_topic     text not null,
    kafka_partition integer not null,
    log_end_offset  bigint not null,
    seen_at         timestamptz not null default now(),
    primary key (kafka_topic, kafka_partition)
);

-- Each batch the loader (or a replay) committed: the quality gate's to-do list. A batch is written in the same
-- transaction as its rows, so the gate sees every committed batch, whether or not the task that loaded it
-- went on to succeed. checked_at is set when the gate passed the batch's rows; only then do they reach marts.
create table if not exists staging.loaded_batches (
    batch_id        bigserial primary key,
    kind            text not null default 'load',   -- 'load' (a loader batch) or 'replay'
    kafka_topic     text not null,
    kafka_topic_id  text,
    kafka_partition integer,                        -- null for a replay, which may span partitions
    start_offset    bigint,
    next_offset     bigint,
    loaded          integer not null default 0,
    duplicates      integer not null default 0,
    rejected        integer not null default 0,
    loaded_at       timestamptz not null default now(),   -- the transaction's start, like its rows' loaded_at
    checked_at      timestamptz
);
create index if not exists loaded_batches_unchecked_idx on staging.loaded_batches (batch_id) where checked_at is null;
create index if not exists loaded_batches_checked_at_idx on staging.loaded_batches (checked_at);

alter table staging.purchase_events add column if not exists batch_id bigint;
create index if not exists purchase_events_batch_idx on staging.purchase_events (batch_id);
alter table staging.purchase_events_rejected add column if not exists batch_id bigint;
-- A record's place in the log is not unique across the log's lives: the embedded broker starts a new log
-- at offset 0 after a restart, and a rejection there must be kept too (each belongs to its batch).
alter table staging.purchase_events_rejected
    drop constraint if exists purchase_events_rejected_kafka_topic_kafka_partition_kafka__key;
create index if not exists purchase_events_rejected_place_idx
    on staging.purchase_events_rejected (kafka_topic, kafka_partition, kafka_offset);

-- Rows loaded before batches were recorded belong to one batch that counts as checked (they were loaded
-- under the gate of their time).
do $$
begin
    if exists (select from staging.purchase_events where batch_id is null limit 1) then
        with legacy as (
            insert into staging.loaded_batches (kind, kafka_topic, loaded, checked_at)
            values ('legacy', 'purchases', 0, now()) returning batch_id
        )
        update staging.purchase_events set batch_id = (select batch_id from legacy) where batch_id is null;
    end if;
end
$$;

-- What the marts may read: the events whose batch passed the quality gate, with when it did.
create or replace view staging.purchase_events_passed as
select
    events.event_id, events.customer_id, events.product_name, events.description, events.quantity,
    events.unit_price, events.currency, events.purchased_at, events.schema_version, events.extra,
    events.kafka_topic, events.kafka_partition, events.kafka_offset, events.loaded_at, events.batch_id,
    batches.checked_at as passed_at
from staging.purchase_events as events
join staging.loaded_batches as batches on batches.batch_id = events.batch_id
where batches.checked_at is not null;
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute("""
        drop view if exists staging.purchase_events_passed;
        drop index if exists staging.purchase_events_rejected_place_idx;
        alter table staging.purchase_events_rejected drop column if exists batch_id;
        drop index if exists staging.purchase_events_batch_idx;
        alter table staging.purchase_events drop column if exists batch_id;
        drop table if exists staging.loaded_batches;
        drop table if exists staging.kafka_log_ends;
    """)
