{#-
    Which rows a data test reads: in the frequent runs the loader's new events trigger, the increment (what
    this run added or changed); in every other run (the daily one, manual runs, backfills, `dbt build` by
    hand, `make test`), the whole table. The transform DAG sets the var `test_scope` to 'increment' for the
    asset-triggered runs (purchases/transform/cosmos.py); its default, 'all', checks everything.

    A model says what its increment is in its .yml, `config: meta: increment: <a filter on its columns>`,
    which may use two placeholders:
      {run_started_at}   when this dbt invocation started: rows a model stamps with statement_timestamp()
                         in this run (transformed_at, last_transformed_at) are at or after it;
      {passed_watermark} the newest passed_at the marts hold, less the incremental lookback: the rows of
                         staging that customer_purchases takes in this run (its own filter).
    A model without it is always tested whole (dim_customers, stg_customers: their size is the customers').

    dbt's generic tests read the model through get_where_subquery (the hook of the `where` config), so
    overriding it scopes every generic test of a model at once, with the test's own `where` kept. Singular
    tests (the reconciliations) compare whole tables: they check only where `whole_table_run()` is true.
    Measured by `make bench-dbt` (an incremental `dbt build` on 1,000,000 vs 10,000 events of history).
-#}
{% macro get_where_subquery(relation) -%}
    {%- set filters = [] -%}
    {%- set where = config.get('where') -%}
    {%- if where %}{% do filters.append(where) %}{% endif -%}
    {%- set increment = increment_filter() -%}
    {%- if increment %}{% do filters.append(increment) %}{% endif -%}
    {%- if filters -%}
        {%- set filtered -%}
            (select * from {{ relation }} where ({{ filters | join(') and (') }})) dbt_subquery
        {%- endset -%}
        {%- do return(filtered) -%}
    {%- else -%}
        {%- do return(relation) -%}
    {%- endif -%}
{%- endmacro %}


{#- True unless this run tests only the increment. -#}
{% macro tests_whole_tables() -%}
    {{ return(var('test_scope', 'all') != 'increment') }}
{%- endmacro %}


{#-
    The singular tests' switch, as SQL: `where {{ whole_table_run() }} and (...)`. In a micro-batch run it
    is `false`, which Postgres folds into an empty plan: the test reads nothing and passes.
-#}
{% macro whole_table_run() -%}
    {{ 'true' if tests_whole_tables() else 'false' }}
{%- endmacro %}


{#- The tested model's increment filter with its placeholders filled in, or none (test the whole table). -#}
{% macro increment_filter() -%}
    {%- if tests_whole_tables() or not execute or not model.get('attached_node') -%}
        {{ return(none) }}
    {%- endif -%}
    {%- set tested = graph.nodes.get(model.attached_node) -%}
    {%- set increment = tested.config.meta.get('increment') if tested else none -%}
    {%- if not increment -%}
        {{ return(none) }}
    {%- endif -%}
    {%- if '{run_started_at}' in increment -%}
        {%- set increment = increment | replace(
            '{run_started_at}', "'" ~ run_started_at.isoformat() ~ "'::timestamptz") -%}
    {%- endif -%}
    {%- if '{passed_watermark}' in increment -%}
        {%- set marts = graph.nodes['model.purchases.customer_purchases'] -%}
        {%- set newest = '-infinity' -%}
        {%- if adapter.get_relation(database=marts.database, schema=marts.schema, identifier=marts.alias) -%}
            {%- set newest = run_query(
                "select coalesce(max(passed_at), '-infinity'::timestamptz)::text from " ~ marts.relation_name
            ).columns[0].values()[0] -%}
        {%- endif -%}
        {%- set increment = increment | replace(
            '{passed_watermark}',
            "('" ~ newest ~ "'::timestamptz - interval '" ~ var('incremental_lookback_minutes') | int ~ " minutes')") -%}
    {%- endif -%}
    {{ return(increment) }}
{%- endmacro %}
