{#-
    One writer at a time per model: a transaction-scoped advisory lock taken in a pre-hook (inside the
    model's transaction). Watermarks compare `transformed_at` stamps, which are only monotonic if runs of
    the same model do not overlap (two Airflow runs, or a run beside a manual `dbt build`).
-#}
{% macro lock_model() -%}
    select pg_advisory_xact_lock(hashtext('dbt:{{ this }}'))
{%- endmacro %}


{#- The newest `column` already in this model, or -infinity when it is empty. -#}
{% macro watermark(column) -%}
    (select coalesce(max({{ column }}), '-infinity'::timestamptz) from {{ this }})
{%- endmacro %}


{#-
    A fingerprint of the threshold configuration for one kind of alert: the default (a dbt var) plus every
    override in the seed. Rows remember the fingerprint they were evaluated with, so a changed threshold
    re-evaluates exactly the rows it affects on the next run, with no full refresh.
-#}
{% macro threshold_fingerprint(threshold_column, default_threshold) -%}
    (
        select md5(
            ({{ default_threshold }})::numeric(18, 2)::text || '|' || coalesce(string_agg(
                customer_id::text || ':' || currency || ':' || coalesce({{ threshold_column }}::text, '-'),
                ',' order by customer_id, currency), '')
        )
        from {{ ref('spend_thresholds') }}
    )
{%- endmacro %}


{#- `column` differs from `value`, written so an index on `column` can answer it. -#}
{% macro differs_from(column, value) -%}
    ({{ column }} < {{ value }} or {{ column }} > {{ value }})
{%- endmacro %}
