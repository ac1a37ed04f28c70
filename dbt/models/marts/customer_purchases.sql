{{
    config(
        materialized='incremental',
        unique_key='event_id',
        incremental_strategy='upsert',
        on_schema_change='append_new_columns',
        indexes=[
            {'columns': ['event_id'], 'unique': True},
            {'columns': ['passed_at']},
            {'columns': ['transformed_at']},
            {'columns': ['customer_id', 'currency', 'purchased_at']},
            {'columns': ['customer_id', 'purchased_at', 'event_id']},
        ],
        pre_hook="{{ lock_model() }}",
    )
}}

{%- set backfill = backfill_range() %}

with

{% if is_incremental() %}

new_events as (

    -- Events the quality gate passed since the last run. The lookback re-reads batches of a gate run that
    -- committed late; the anti-join below skips the events already here.
    select * from {{ ref('stg_purchase_events') }}
    where passed_at >= {{ watermark_literal('passed_at') }}
        - interval '{{ var("incremental_lookback_minutes") | int }} minutes'

    {%- if backfill %}

    union

    -- A backfill also picks up any event purchased in its window that is missing here.
    select * from {{ ref('stg_purchase_events') }}
    where purchased_at >= {{ utc_day_start("'" ~ backfill.start ~ "'::date") }}
        and purchased_at < {{ utc_day_start("'" ~ backfill.end ~ "'::date") }}

    {%- endif %}

),

stg_purchase_events as (

    select * from new_events
    where
        not exists (
            select 1 from {{ this }} as already_transformed
            where already_transformed.event_id = new_events.event_id
        )

),

{% else %}

stg_purchase_events as (

    select * from {{ ref('stg_purchase_events') }}

),

{% endif %}

final as (

    select
        event_id,
        customer_id,
        product_name,
        description,
        quantity,
        unit_price,
        currency,
        quantity * unit_price as total_price,
        purchased_at,
        loaded_at,
        passed_at,
        -- After the pre-hook's lock: later than anything an earlier run of this model committed.
        statement_timestamp() as transformed_at

    from stg_purchase_events

)

select * from final
