{{
    config(
        materialized='incremental',
        unique_key=['customer_id', 'currency', 'spend_date'],
        incremental_strategy='upsert',
        on_schema_change='append_new_columns',
        indexes=[
            {'columns': ['customer_id', 'currency', 'spend_date'], 'unique': True},
            {'columns': ['spend_date']},
            {'columns': ['last_transformed_at']},
            {'columns': ['daily_threshold_fingerprint']},
        ],
        pre_hook=["{{ lock_model() }}", "{{ delete_backfill_days('spend_date') }}"],
        post_hook=[
            "create index if not exists {{ this.identifier }}_crossed_idx on {{ this }}
                (daily_threshold_crossed_at) where daily_threshold_crossed_at is not null",
        ],
    )
}}

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

    select {{ threshold_fingerprint('daily_threshold', var('daily_spend_alert_threshold')) }} as fingerprint

),

{% if is_incremental() %}

fingerprints_in_use as (

    -- min and max come from the column's index: cheap, and equal to the current fingerprint unless the
    -- threshold configuration changed since some rows were evaluated.
    select
        min(daily_threshold_fingerprint) as lowest,
        max(daily_threshold_fingerprint) as highest
    from {{ this }}

),

days_to_rebuild as (

    -- Days of purchases transformed since this model's last run.
    select distinct
        customer_id,
        currency,
        {{ utc_date('purchased_at') }} as spend_date
    from customer_purchases
    where transformed_at > {{ watermark('last_transformed_at') }}

    union

    -- Days evaluated against a threshold configuration that has changed since.
    select
        customer_id,
        currency,
        spend_date
    from {{ this }}
    where {{ configuration_changed() }}
        and daily_threshold_fingerprint <> (select threshold_fingerprint.fingerprint from threshold_fingerprint)

    {%- if backfill %}

    union

    -- Every day of the backfill window (its old rows were deleted by the pre-hook).
    select distinct
        customer_id,
        currency,
        {{ utc_date('purchased_at') }} as spend_date
    from customer_purchases
    where purchased_at >= {{ utc_day_start("'" ~ backfill.start ~ "'::date") }}
        and purchased_at < {{ utc_day_start("'" ~ backfill.end ~ "'::date") }}

    {%- endif %}

),

purchases_of_days as (

    -- A lateral join: each day's purchases are read through the (customer_id, currency, purchased_at)
    -- index, however many rows the planner guesses the watermark filter above lets through (`offset 0`
    -- keeps Postgres from flattening it into a join it would plan as a scan of the whole table).
    select purchases_of_day.*
    from days_to_rebuild
    cross join lateral (
        select customer_purchases.*
        from customer_purchases
        where customer_purchases.customer_id = days_to_rebuild.customer_id
            and customer_purchases.currency = days_to_rebuild.currency
            and customer_purchases.purchased_at >= {{ utc_day_start('days_to_rebuild.spend_date') }}
            and customer_purchases.purchased_at < {{ utc_day_start('days_to_rebuild.spend_date + 1') }}
        offset 0  -- noqa: AM09
    ) as purchases_of_day

),

{% else %}

purchases_of_days as (

    select * from customer_purchases

),

{% endif %}

purchases_with_running_spend as (

    select
        customer_id,
        currency,
        {{ utc_date('purchased_at') }} as spend_date,
        purchased_at,
        total_price,
        transformed_at,
        sum(total_price) over (
            partition by customer_id, currency, {{ utc_date('purchased_at') }}
            order by purchased_at, event_id
            rows between unbounded preceding and current row
        ) as running_spend

    from purchases_of_days

),

days as (

    select
        customer_id,
        currency,
        spend_date,
        sum(total_price) as spend,
        count(*) as purchase_count,
        min(purchased_at) as first_purchase_at,
        max(purchased_at) as last_purchase_at,
        max(transformed_at) as last_transformed_at

    from purchases_with_running_spend
    group by customer_id, currency, spend_date

),

days_with_threshold as (

    select
        days.*,
        coalesce(
            spend_thresholds.daily_threshold,
            ({{ var('daily_spend_alert_threshold') }})::numeric(18, 2)
        ) as daily_threshold

    from days
    left join spend_thresholds
        on days.customer_id = spend_thresholds.customer_id
        and days.currency = spend_thresholds.currency

),

crossings as (

    -- The purchase that brought the day's running spend to the threshold.
    select
        purchases_with_running_spend.customer_id,
        purchases_with_running_spend.currency,
        purchases_with_running_spend.spend_date,
        min(purchases_with_running_spend.purchased_at) as daily_threshold_crossed_at

    from purchases_with_running_spend
    inner join days_with_threshold
        on purchases_with_running_spend.customer_id = days_with_threshold.customer_id
        and purchases_with_running_spend.currency = days_with_threshold.currency
        and purchases_with_running_spend.spend_date = days_with_threshold.spend_date
    where purchases_with_running_spend.running_spend >= days_with_threshold.daily_threshold
    group by
        purchases_with_running_spend.customer_id,
        purchases_with_running_spend.currency,
        purchases_with_running_spend.spend_date

),

final as (

    select
        days_with_threshold.customer_id,
        days_with_threshold.currency,
        days_with_threshold.spend_date,
        days_with_threshold.spend::numeric as spend,
        days_with_threshold.purchase_count::bigint as purchase_count,
        days_with_threshold.first_purchase_at,
        days_with_threshold.last_purchase_at,
        days_with_threshold.daily_threshold,
        crossings.daily_threshold_crossed_at,
        threshold_fingerprint.fingerprint as daily_threshold_fingerprint,
        days_with_threshold.last_transformed_at

    from days_with_threshold
    cross join threshold_fingerprint
    left join crossings
        on days_with_threshold.customer_id = crossings.customer_id
        and days_with_threshold.currency = crossings.currency
        and days_with_threshold.spend_date = crossings.spend_date

)

select * from final
