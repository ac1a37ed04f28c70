{{
    config(
        materialized='incremental',
        unique_key=['customer_id', 'currency'],
        incremental_strategy='upsert',
        on_schema_change='append_new_columns',
        indexes=[
            {'columns': ['customer_id', 'currency'], 'unique': True},
            {'columns': ['last_transformed_at']},
            {'columns': ['lifetime_threshold_fingerprint']},
        ],
        pre_hook="{{ lock_model() }}",
        post_hook=[
            "create index if not exists {{ this.identifier }}_crossed_idx on {{ this }}
                (lifetime_threshold_crossed_at) where lifetime_threshold_crossed_at is not null",
        ],
    )
}}

{#-
    Incremental by addition: purchases are only ever inserted into customer_purchases, so the totals of
    a customer are its previous totals plus its purchases transformed since this model's last run.
    A run costs what arrived, not the history. Customers whose totals must be recounted from scratch
    (a backfill window, a changed threshold configuration) are the exception, and rare.
-#}
{%- set backfill = backfill_range() %}

with

-- `not materialized`: referenced more than once, Postgres would otherwise materialize the whole table
-- instead of reading only the rows the filters and joins below need through its indexes.
customer_purchases as not materialized (

    select * from {{ ref('customer_purchases') }}

),

spend_thresholds as (

    select * from {{ ref('spend_thresholds') }}

),

threshold_fingerprint as (

    select {{ threshold_fingerprint('lifetime_threshold', var('spend_alert_threshold')) }} as fingerprint

),

{% if is_incremental() %}

previous_totals as not materialized (

    select * from {{ this }}

),

fingerprints_in_use as (

    -- min and max come from the column's index: cheap, and equal to the current fingerprint unless the
    -- threshold configuration changed since some rows were evaluated.
    select
        min(lifetime_threshold_fingerprint) as lowest,
        max(lifetime_threshold_fingerprint) as highest
    from {{ this }}

),

customers_to_recount as (

    select
        customer_id,
        currency
    from previous_totals
    where {{ configuration_changed() }}
        and lifetime_threshold_fingerprint <> (select threshold_fingerprint.fingerprint from threshold_fingerprint)

    {%- if backfill %}

    union

    select distinct
        customer_id,
        currency
    from customer_purchases
    where purchased_at >= {{ utc_day_start("'" ~ backfill.start ~ "'::date") }}
        and purchased_at < {{ utc_day_start("'" ~ backfill.end ~ "'::date") }}

    {%- endif %}

),

new_purchases as (

    select customer_purchases.*
    from customer_purchases
    where customer_purchases.transformed_at > {{ watermark('last_transformed_at') }}
        and not exists (
            select 1 from customers_to_recount
            where customers_to_recount.customer_id = customer_purchases.customer_id
                and customers_to_recount.currency = customer_purchases.currency
        )

),

new_purchase_totals as (

    select
        customer_id,
        currency,
        sum(total_price) as spend,
        count(*) as purchase_count,
        min(purchased_at) as first_purchase_at,
        max(purchased_at) as last_purchase_at,
        max(transformed_at) as last_transformed_at

    from new_purchases
    group by customer_id, currency

),

added_up as (

    select
        new_purchase_totals.customer_id,
        new_purchase_totals.currency,
        coalesce(previous_totals.total_spend, 0) + new_purchase_totals.spend as total_spend,
        coalesce(previous_totals.purchase_count, 0) + new_purchase_totals.purchase_count as purchase_count,
        -- least/greatest ignore nulls: a customer's first purchase has no previous totals
        least(previous_totals.first_purchase_at, new_purchase_totals.first_purchase_at) as first_purchase_at,
        greatest(previous_totals.last_purchase_at, new_purchase_totals.last_purchase_at) as last_purchase_at,
        new_purchase_totals.last_transformed_at,
        -- A crossing found earlier still holds unless a purchase arrived that was made before it.
        case
            when new_purchase_totals.first_purchase_at > previous_totals.lifetime_threshold_crossed_at
                then previous_totals.lifetime_threshold_crossed_at
        end as known_crossed_at

    from new_purchase_totals
    left join previous_totals
        on new_purchase_totals.customer_id = previous_totals.customer_id
        and new_purchase_totals.currency = previous_totals.currency

),

purchases_to_recount as (

    -- Every purchase of the customers to recount, read through the (customer_id, currency, purchased_at)
    -- index (a lateral join, whatever the planner's estimates).
    select customer_purchases.*
    from customers_to_recount
    cross join lateral (
        select purchases.* from customer_purchases as purchases
        where purchases.customer_id = customers_to_recount.customer_id
            and purchases.currency = customers_to_recount.currency
        offset 0  -- not flattened into a join: one index scan per customer -- noqa: AM09
    ) as customer_purchases

),

recounted as (

    select
        customer_id,
        currency,
        sum(total_price) as total_spend,
        count(*) as purchase_count,
        min(purchased_at) as first_purchase_at,
        max(purchased_at) as last_purchase_at,
        max(transformed_at) as last_transformed_at,
        null::timestamptz as known_crossed_at

    from purchases_to_recount
    group by customer_id, currency

),

totals as (

    select * from added_up
    union all
    select * from recounted

),

{% else %}

totals as (

    select
        customer_id,
        currency,
        sum(total_price) as total_spend,
        count(*) as purchase_count,
        min(purchased_at) as first_purchase_at,
        max(purchased_at) as last_purchase_at,
        max(transformed_at) as last_transformed_at,
        null::timestamptz as known_crossed_at

    from customer_purchases
    group by customer_id, currency

),

{% endif %}

totals_with_threshold as (

    select
        totals.*,
        coalesce(
            spend_thresholds.lifetime_threshold,
            ({{ var('spend_alert_threshold') }})::numeric(18, 2)
        ) as lifetime_threshold

    from totals
    left join spend_thresholds
        on totals.customer_id = spend_thresholds.customer_id
        and totals.currency = spend_thresholds.currency

),

crossings_to_locate as (

    select
        customer_id,
        currency,
        lifetime_threshold
    from totals_with_threshold
    where total_spend >= lifetime_threshold
        and known_crossed_at is null

),

running_spend as (

    -- Only customers who just reached their threshold (or are recounted) get their history read, through
    -- the (customer_id, currency, purchased_at) index (a lateral join, whatever the planner's estimates).
    select
        customer_purchases.customer_id,
        customer_purchases.currency,
        customer_purchases.purchased_at,
        crossings_to_locate.lifetime_threshold,
        sum(customer_purchases.total_price) over (
            partition by customer_purchases.customer_id, customer_purchases.currency
            order by customer_purchases.purchased_at, customer_purchases.event_id
            rows between unbounded preceding and current row
        ) as running_spend

    from crossings_to_locate
    cross join lateral (
        select purchases.* from customer_purchases as purchases
        where purchases.customer_id = crossings_to_locate.customer_id
            and purchases.currency = crossings_to_locate.currency
        offset 0  -- not flattened into a join: one index scan per customer -- noqa: AM09
    ) as customer_purchases

),

located_crossings as (

    select
        customer_id,
        currency,
        min(purchased_at) as crossed_at
    from running_spend
    where running_spend >= lifetime_threshold
    group by customer_id, currency

),

final as (

    select
        totals_with_threshold.customer_id,
        totals_with_threshold.currency,
        totals_with_threshold.total_spend::numeric as total_spend,
        totals_with_threshold.purchase_count::bigint as purchase_count,
        totals_with_threshold.first_purchase_at,
        totals_with_threshold.last_purchase_at,
        totals_with_threshold.lifetime_threshold,
        case
            when totals_with_threshold.total_spend >= totals_with_threshold.lifetime_threshold
                then coalesce(totals_with_threshold.known_crossed_at, located_crossings.crossed_at)
        end as lifetime_threshold_crossed_at,
        threshold_fingerprint.fingerprint as lifetime_threshold_fingerprint,
        totals_with_threshold.last_transformed_at

    from totals_with_threshold
    cross join threshold_fingerprint
    left join located_crossings
        on totals_with_threshold.customer_id = located_crossings.customer_id
        and totals_with_threshold.currency = located_crossings.currency

)

select * from final
