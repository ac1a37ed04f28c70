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
    unit_price      numeric(12, 2) not null,   -- the contract's largest price has 9 digits
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
