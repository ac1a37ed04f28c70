-- Every alert's spend reached its threshold, and its threshold is the one configured now
-- (var default or seed override); returns each alert that disagrees.
-- A whole-table check: the daily run (and any run but the micro-batches') makes it (dbt/macros/increment.sql).
with

alerts as (

    select * from {{ ref('spend_alerts') }}

),

overrides as (

    select * from {{ ref('spend_thresholds') }}

)

select
    alerts.customer_id,
    alerts.currency,
    alerts.alert_type,
    alerts.spend_date,
    alerts.spend,
    alerts.threshold,
    alerts.first_crossed_at

from alerts
left join overrides
    on alerts.customer_id = overrides.customer_id and alerts.currency = overrides.currency
where {{ whole_table_run() }} and (
        alerts.spend < alerts.threshold
        or alerts.threshold <> case alerts.alert_type
            when 'lifetime'
                then coalesce(overrides.lifetime_threshold, ({{ var('spend_alert_threshold') }})::numeric(18, 2))
            else coalesce(overrides.daily_threshold, ({{ var('daily_spend_alert_threshold') }})::numeric(18, 2))
        end
    )
