{#-
    The backfill window, from the vars `start_date` and `end_date` (ISO dates, UTC, end exclusive).
    Returns none when neither is set (a normal incremental run), else {'start': 'YYYY-MM-DD', 'end': ...}.
    The Airflow DAG sets both from its data interval; a half-set or backwards window is an error, not a guess.
-#}
{% macro backfill_range() %}
    {%- set start = (var('start_date', '') or '') | string | trim -%}
    {%- set end = (var('end_date', '') or '') | string | trim -%}
    {%- if start in ('', 'None') and end in ('', 'None') -%}
        {{ return(none) }}
    {%- endif -%}
    {%- if start in ('', 'None') or end in ('', 'None') -%}
        {{ exceptions.raise_compiler_error(
            "A backfill needs both vars start_date and end_date (got start_date='" ~ start
            ~ "', end_date='" ~ end ~ "')") }}
    {%- endif -%}
    {%- set parsed = {} -%}
    {%- for name, value in [('start_date', start), ('end_date', end)] -%}
        {%- if not modules.re.match('^[0-9]{4}-[0-9]{2}-[0-9]{2}$', value) -%}
            {{ exceptions.raise_compiler_error(
                "var " ~ name ~ " must be an ISO date YYYY-MM-DD, got '" ~ value ~ "'") }}
        {%- endif -%}
        {%- do parsed.update({name: modules.datetime.datetime.strptime(value, '%Y-%m-%d').date()}) -%}
    {%- endfor -%}
    {%- if parsed['end_date'] <= parsed['start_date'] -%}
        {{ exceptions.raise_compiler_error(
            "var end_date (" ~ end ~ ") must be after start_date (" ~ start ~ "); end_date is exclusive") }}
    {%- endif -%}
    {{ return({'start': start, 'end': end}) }}
{% endmacro %}


{#- Deletes the rows of the backfill window before they are rebuilt, inside the model's transaction. -#}
{% macro delete_backfill_days(date_column) %}
    {%- set backfill = backfill_range() -%}
    {%- if backfill and is_incremental() -%}
        delete from {{ this }}
        where {{ date_column }} >= '{{ backfill.start }}'::date and {{ date_column }} < '{{ backfill.end }}'::date
    {%- else -%}
        select 1 as nothing_to_delete
    {%- endif -%}
{% endmacro %}
