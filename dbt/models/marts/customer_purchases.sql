{{
    config(
        materialized='incremental',
        unique_key='event_id',
        incremental_strategy='upsert',
        on_schema_change='append_new_columns',
        indexes=[
            {'columns': ['event_id'], 'unique': True},
            {'columns': ['loaded_at']},
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

    -- Events loaded since the last run. The lookback re-reads events of loader transactions that
    -- committed late (their loaded_at is their start); the anti-join below skips those already here.
    select * from {{ ref('stg_purchase_events') }}
    where loaded_at >= {{ watermark_literal('loaded_at') }}
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
    where not exists (
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
        (quantity * unit_price)::numeric(18, 2) as total_price,
        purchased_at,
        loaded_at,
        -- After the pre-hook's lock: later than anything an earlier run of this model committed.
        statement_timestamp() as transformed_at

    from stg_purchase_events

)

select * from final
