{{
    config(materialized='view')
}}

{#-
    A view: the crossings are computed where the spend is (customer_spend, customer_spend_daily) as their
    rows are rebuilt, so the alerts cost nothing to refresh; partial indexes on the crossing columns keep
    reads cheap.
-#}

with

customer_spend as (

    select * from {{ ref('customer_spend') }}

),

customer_spend_daily as (

    select * from {{ ref('customer_spend_daily') }}

),

lifetime_alerts as (

    select
        customer_id,
        currency,
        'lifetime'::text as alert_type,
        null::date as spend_date,
        total_spend::numeric as spend,
        lifetime_threshold as threshold,
        lifetime_threshold_crossed_at as first_crossed_at

    from customer_spend
    where lifetime_threshold_crossed_at is not null

),

daily_alerts as (

    select
        customer_id,
        currency,
        'daily'::text as alert_type,
        spend_date,
        spend::numeric as spend,
        daily_threshold as threshold,
        daily_threshold_crossed_at as first_crossed_at

    from customer_spend_daily
    where daily_threshold_crossed_at is not null

),

final as (

    select * from lifetime_alerts
    union all
    select * from daily_alerts

)

select * from final
