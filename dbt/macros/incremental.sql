{#-
    One writer at a time per model: a transaction-scoped advisory lock taken in a pre-hook (inside the
    model's transaction). Watermarks compare `transformed_at` stamps, which are only monotonic if runs of
    the same model do not overlap (two Airflow runs, or a run beside a manual `dbt build`).
-#}
{% macro lock_model() -%}
    select pg_advisory_xact_lock(hashtext('dbt:{{ this }}'))
{%- endmacro %}


{#- The newest `column` already in this model, or -infinity when it is empty (a scalar subquery). -#}
{% macro watermark(column) -%}
    (select coalesce(max({{ column }}), '-infinity'::timestamptz) from {{ this }})
{%- endmacro %}


{#-
    The same, read when the model runs and written into its SQL as a literal: the planner then knows the
    range is recent (a handful of rows, read through the index) rather than guessing a third of the table.
    A model built before `column` existed (an upgraded warehouse) has no watermark yet: -infinity, so the
    first run reads everything once and the anti-join of the model skips what is already there.
-#}
{% macro watermark_literal(column) -%}
    {%- if execute and is_incremental()
          and column in adapter.get_columns_in_relation(this) | map(attribute='name') | list -%}
        {%- set newest = run_query(
            "select coalesce(max(" ~ column ~ "), '-infinity'::timestamptz)::text from " ~ this
        ).columns[0].values()[0] -%}
        '{{ newest }}'::timestamptz
    {%- else -%}
        '-infinity'::timestamptz
    {%- endif -%}
{%- endmacro %}


{#-
    A fingerprint of the threshold configuration for one kind of alert: the default (a dbt var) plus every
    override in the seed. Rows remember the fingerprint they were evaluated with, so after a change the next
    run re-evaluates the rows evaluated with another configuration, with no full refresh.
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


{#-
    True when rows were evaluated with another threshold configuration than the current one, from the CTEs
    `fingerprints_in_use` (min/max of the model's fingerprint column) and `threshold_fingerprint`. It does
    not depend on the row, so Postgres checks it once and skips the scan of the model when it is false.
-#}
{% macro configuration_changed() -%}
    exists (
        select 1 from fingerprints_in_use cross join threshold_fingerprint
        where fingerprints_in_use.lowest <> threshold_fingerprint.fingerprint
            or fingerprints_in_use.highest <> threshold_fingerprint.fingerprint
    )
{%- endmacro %}


{#-
    Session settings for a marts model's transaction (a pre-hook of every mart, see dbt_project.yml).
    JIT compilation costs about a second per statement and pays off only on big scans, yet the planner,
    guessing a third of a table behind each watermark filter, would turn it on for every small batch.
    Parallel workers cost more to start than an incremental batch takes to read.
-#}
{% macro small_batch_settings() -%}
    set local jit = off
    {%- if is_incremental() %}; set local max_parallel_workers_per_gather = 0{% endif %}
{%- endmacro %}


{#-
    incremental_strategy='upsert': `insert ... on conflict (unique_key) do update`. Each row of the batch
    finds its match through the unique index on unique_key, so writing a batch costs the batch. (Postgres
    plans dbt's MERGE and delete+insert as a hash join over the whole model: their cost grows with history.)
    Needs a unique index on exactly the unique_key columns (each model declares it in `indexes`).
-#}
{% macro get_incremental_upsert_sql(arg_dict) %}
    {%- set keys = [arg_dict["unique_key"]] if arg_dict["unique_key"] is string else arg_dict["unique_key"] -%}
    {%- set columns = arg_dict["dest_columns"] | map(attribute="quoted") | join(", ") -%}
    insert into {{ arg_dict["target_relation"] }} ({{ columns }})
    select {{ columns }} from {{ arg_dict["temp_relation"] }}
    on conflict ({{ keys | join(", ") }}) do update set
    {%- for column in arg_dict["dest_columns"] if column.name not in keys %}
        {{ column.quoted }} = excluded.{{ column.quoted }}{{ "," if not loop.last }}
    {%- endfor %}
{% endmacro %}
