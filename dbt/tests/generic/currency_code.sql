{#- Fails for every value that is not an ISO 4217 style code: three capital letters. -#}
{% test currency_code(model, column_name) %}
    select {{ column_name }} as malformed_currency
    from {{ model }}
    where {{ column_name }} !~ '^[A-Z]{3}$'
{% endtest %}
