{#- Spend days are UTC calendar days, whatever the session time zone. -#}
{% macro utc_date(timestamp_expression) -%}
    (({{ timestamp_expression }}) at time zone 'UTC')::date
{%- endmacro %}

{#- The first instant of a UTC day, as timestamptz (for range predicates that use indexes). -#}
{% macro utc_day_start(date_expression) -%}
    (({{ date_expression }})::timestamp at time zone 'UTC')
{%- endmacro %}
