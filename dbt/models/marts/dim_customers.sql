{{
    config(
        materialized='table',
        indexes=[{'columns': ['customer_id'], 'unique': True}],
    )
}}

{#- One row per registered customer: rebuilt each run, which costs the number of customers, not purchases. -#}

with

customers as (

    select * from {{ ref('stg_customers') }}

),

customer_spend as (

    select * from {{ ref('customer_spend') }}

),

purchase_activity as (

    select
        customer_id,
        min(first_purchase_at) as first_purchase_at,
        max(last_purchase_at) as last_purchase_at,
        sum(purchase_count) as purchase_count

    from customer_spend
    group by customer_id

),

final as (

    select
        customers.customer_id,
        customers.username,
        customers.created_at,
        purchase_activity.first_purchase_at,
        purchase_activity.last_purchase_at,
        coalesce(purchase_activity.purchase_count, 0)::bigint as purchase_count

    from customers
    left join purchase_activity
        on customers.customer_id = purchase_activity.customer_id

)

select * from final
