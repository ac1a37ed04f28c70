{#-
    Fails for every value that breaks the event contract's rule for its column (purchases/contract.py,
    through the generated macro event_contract()): the loader stores nothing else, so a failure means data
    reached the table some other way. Nulls are not_null's business.
-#}
{% test follows_event_contract(model, column_name) %}
    {%- set rules = event_contract() -%}
    select {{ column_name }} as value_outside_the_contract
    from {{ model }}
    where
    {%- if column_name == 'quantity' %}
        {{ column_name }} not between 1 and {{ rules.max_quantity }}
    {%- elif column_name == 'unit_price' %}
        {{ column_name }} <= 0 or {{ column_name }} > {{ rules.max_unit_price }}
        or {{ column_name }} <> round({{ column_name }}, {{ rules.price_decimal_places }})
    {%- elif column_name == 'currency' %}
        {{ column_name }} !~ '{{ rules.currency_pattern }}'
    {%- elif column_name == 'product_name' %}
        char_length({{ column_name }}) not between 1 and {{ rules.max_product_name }}
        or {{ column_name }} ~ '{{ rules.name_forbidden_pattern }}'
    {%- elif column_name == 'description' %}
        char_length({{ column_name }}) > {{ rules.max_description }}
        or {{ column_name }} ~ '{{ rules.description_forbidden_pattern }}'
    {%- elif column_name == 'purchased_at' %}
        {{ column_name }} < '{{ rules.earliest_purchased_at }}'::timestamptz
        or {{ column_name }} > loaded_at + interval '{{ rules.future_tolerance_seconds }} seconds'
    {%- else %}
        {{ exceptions.raise_compiler_error("the event contract has no rule for column " ~ column_name) }}
    {%- endif %}
{% endtest %}
