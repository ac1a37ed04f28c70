with

source as (

    select * from {{ source('staging', 'purchase_events_passed') }}

),

renamed as (

    select
        ----------  ids
        event_id::uuid as event_id,
        customer_id::uuid as customer_id,

        ----------  text
        product_name::text as product_name,
        description::text as description,
        currency::varchar(3) as currency,

        ----------  numerics
        quantity::integer as quantity,
        unit_price::numeric as unit_price,
        schema_version::integer as schema_version,

        ----------  timestamps
        purchased_at::timestamptz as purchased_at,
        loaded_at::timestamptz as loaded_at,
        passed_at::timestamptz as passed_at

    from source

)

select * from renamed
