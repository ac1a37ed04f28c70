-- Reconciliation: customer_purchases holds exactly the distinct event ids that passed the quality gate.
-- Events passed within the last `reconciliation_grace_minutes` before the newest one transformed may
-- still be on their way (a gate run committing late), so they are not counted on either side.
-- Returns one row when the counts differ, or when customer_purchases has an event staging does not.
-- A whole-table check: the daily run (and any run but the micro-batches') makes it (dbt/macros/increment.sql).
{{ config(severity='error') }}
{%- set grace_minutes = var("reconciliation_grace_minutes", var("incremental_lookback_minutes")) | int %}

with

bound as (

    select max(passed_at) - interval '{{ grace_minutes }} minutes' as passed_until
    from {{ ref('customer_purchases') }}

),

staging_events as (

    select count(distinct event_id) as event_count
    from {{ source('staging', 'purchase_events_passed') }}
    where passed_at <= (select bound.passed_until from bound)

),

transformed_events as (

    select count(*) as event_count
    from {{ ref('customer_purchases') }}
    where passed_at <= (select bound.passed_until from bound)

),

unknown_to_staging as (

    select count(*) as event_count
    from {{ ref('customer_purchases') }}
    where
        not exists (
            select 1 from {{ source('staging', 'purchase_events_passed') }} as staged
            where staged.event_id = customer_purchases.event_id
        )

)

select
    staging_events.event_count as staging_distinct_event_ids,
    transformed_events.event_count as customer_purchases_rows,
    unknown_to_staging.event_count as customer_purchases_not_in_staging

from staging_events, transformed_events, unknown_to_staging
where {{ whole_table_run() }} and (
        staging_events.event_count <> transformed_events.event_count
        or unknown_to_staging.event_count > 0
    )
