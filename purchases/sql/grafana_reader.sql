-- Grafana's read-only access to the warehouse: the views its panels and alert rules need from
-- `staging`, and a role that can SELECT only in `marts`.
-- Run by purchases.roles.ensure_reader_role as the warehouse owner (the role dbt builds `marts` with).
-- Idempotent. `{reader}` is replaced by the quoted role name; every other brace is doubled.
--
-- Why views over staging live in `marts`: Grafana may read `marts` only, yet the pipeline's health
-- (is the loader keeping up, what does it reject) is only visible in `staging`. These views expose
-- timestamps, counts, offsets and rejection reasons, never customers' data or the raw rejected records.
-- They read only `staging` tables: a view over a dbt model would be dropped by the CASCADE with which
-- dbt replaces a table, so queries that combine staging and dbt models are written in Grafana instead.

create schema if not exists marts;

-- One row: how fresh the loaded events are. Seconds are NULL while nothing was ever loaded.
create or replace view marts.pipeline_freshness as
with newest as (
    select max(loaded_at) as newest_loaded_at, max(purchased_at) as newest_purchased_at
    from staging.purchase_events
)
select
    now() as checked_at,
    newest.newest_loaded_at,
    newest.newest_purchased_at,
    extract(epoch from now() - newest.newest_loaded_at)::numeric(14, 3) as seconds_since_newest_load,
    (select count(*) from staging.purchase_events
      where loaded_at > now() - interval '10 minutes') as events_loaded_last_10m,
    (select count(*) from staging.purchase_events
      where loaded_at > now() - interval '1 hour') as events_loaded_last_hour,
    -- How busy the shop was just before the loading stopped (or up to now, while it runs): the
    -- "purchases are being accepted" signal of the Pipeline stale rule. Anchored on the newest load,
    -- not on now(), so that the rule keeps firing however long the loader stays down.
    (select count(*) from staging.purchase_events
      where loaded_at >= newest.newest_loaded_at - interval '1 hour') as events_loaded_hour_before_newest
from newest;

-- When each event reached staging, without its content: lets a query find events that are loaded but
-- not yet transformed into marts (compare with marts.customer_purchases.loaded_at).
create or replace view marts.staged_event_loads as
select event_id, purchased_at, loaded_at
from staging.purchase_events;

-- What the loader rejected in the last 30 days and why; the raw key and value stay in staging.
create or replace view marts.rejected_events_recent as
select rejection_id, rejected_at, reason, kafka_partition, replayed_at
from staging.purchase_events_rejected
where rejected_at > now() - interval '30 days';

-- One row per topic partition the loader knows of, from what it committed (staging.kafka_offsets) and what
-- it last saw of the partition's log (staging.kafka_log_ends, written outside the batch transactions): a
-- partition whose batches keep failing still shows its lag, and that its last commit grows old. Either row
-- may be missing: no offsets row means nothing committed yet (next offset 0, last_commit_at NULL); no log
-- end row (a loader from before it recorded them) means the lag is unknown, shown as 0.
create or replace view marts.partition_lag as
select
    kafka_topic,
    kafka_partition,
    coalesce(o.next_offset, 0) as next_offset,
    e.log_end_offset,
    greatest(coalesce(e.log_end_offset - coalesce(o.next_offset, 0), 0), 0) as lag,
    o.updated_at as last_commit_at,
    extract(epoch from now() - o.updated_at)::numeric(14, 3) as seconds_since_commit,
    e.seen_at as log_end_seen_at
from staging.kafka_offsets o
full join staging.kafka_log_ends e using (kafka_topic, kafka_partition);

do $do$
begin
    if not exists (select from pg_roles where rolname = {reader_literal}) then
        create role {reader} login;
    end if;
end
$do$;

-- Read-only even if someone grants it more by mistake; a slow dashboard query cannot hog the warehouse.
alter role {reader} set default_transaction_read_only = on;
alter role {reader} set statement_timeout = '30s';

revoke all on schema app, staging from {reader};
grant usage on schema marts to {reader};
grant select on all tables in schema marts to {reader};
-- Tables and views that dbt creates later (every run replaces some) are readable at once.
alter default privileges in schema marts grant select on tables to {reader};
