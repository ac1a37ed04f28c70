with

source as (

    -- Named columns only: password_hash never leaves app.customers.
    select
        customer_id,
        username,
        created_at,
        updated_at
    from {{ source('app', 'customers') }}

),

renamed as (

    select
        ----------  ids
        customer_id::uuid as customer_id,

        ----------  text
        username::text as username,

        ----------  timestamps
        created_at::timestamptz as created_at,
        updated_at::timestamptz as updated_at

    from source

)

select * from renamed
