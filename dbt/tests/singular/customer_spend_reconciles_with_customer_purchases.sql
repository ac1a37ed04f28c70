-- Reconciliation: per customer and currency, customer_spend (kept incrementally, by addition) equals the
-- sum and count of customer_purchases, and so does the sum of customer_spend_daily. Returns each mismatch.
-- A whole-table check: the daily run (and any run but the micro-batches') makes it (dbt/macros/increment.sql).
{{ config(severity='error') }}

with

purchases as (

    select
        customer_id,
        currency,
        sum(total_price) as total_spend,
        count(*) as purchase_count
    from {{ ref('customer_purchases') }}
    group by customer_id, currency

),

daily as (

    select
        customer_id,
        currency,
        sum(spend) as total_spend,
        sum(purchase_count) as purchase_count
    from {{ ref('customer_spend_daily') }}
    group by customer_id, currency

),

lifetime as (

    select
        customer_id,
        currency,
        total_spend,
        purchase_count
    from {{ ref('customer_spend') }}

)

select
    coalesce(purchases.customer_id, lifetime.customer_id, daily.customer_id) as customer_id,
    coalesce(purchases.currency, lifetime.currency, daily.currency) as currency,
    purchases.total_spend as purchases_total,
    lifetime.total_spend as customer_spend_total,
    daily.total_spend as daily_total,
    purchases.purchase_count as purchases_count,
    lifetime.purchase_count as customer_spend_count,
    daily.purchase_count as daily_count

from purchases
full outer join lifetime
    on purchases.customer_id = lifetime.customer_id and purchases.currency = lifetime.currency
full outer join daily
    on coalesce(purchases.customer_id, lifetime.customer_id) = daily.customer_id
    and coalesce(purchases.currency, lifetime.currency) = daily.currency
where {{ whole_table_run() }} and (
        purchases.total_spend is distinct from lifetime.total_spend
        or purchases.total_spend is distinct from daily.total_spend
        or purchases.purchase_count is distinct from lifetime.purchase_count
        or purchases.purchase_count is distinct from daily.purchase_count
    )
