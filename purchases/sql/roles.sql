-- One role per part of the pipeline, each able to do only what its part needs; the owner (a superuser, or
-- the owner of the database) only sets up: migrations, these grants, the reader's views.
-- Run by purchases.roles.ensure_roles as the owner, in one transaction. Idempotent: `make up` and the Docker
-- stack's warehouse-init run it on every start. `{api}`, `{loader}`, `{gate}`, `{dbt}`, `{reader}` are the
-- quoted role names, `{database}` the warehouse's; every other brace is doubled.
--
--   api     the ingest API: customers (sign up, log in, password), login failures; reads the purchases it
--           lists, the spend marts it serves and which batches they counted. No write to staging or marts.
--   loader  the loader and the replay: writes staging's events, rejections, batches, offsets, log ends;
--           reads which customers exist (their ids only).
--   gate    the quality gate: reads staging's events and batches and customer ids; marks batches passed.
--   dbt     owns schemas marts and marts_staging (builds, replaces and drops its models); reads the events
--           the gate passed and the customers' names, never their password hashes.
--   reader  Grafana: reads marts (grafana_reader.sql), nothing else.
--   pages   the Airflow UI's pages (purchases/pages.py): reads pages.dbt_docs and pages.data_docs, nothing
--           else. No login: the api-server's plugin signs in as the gate, a member, and works as it (SET
--           ROLE). The gate writes the Data Docs, dbt the dbt docs.

do $do$
declare
    part text;
begin
    foreach part in array array[{api_literal}, {loader_literal}, {gate_literal}, {dbt_literal}] loop
        if not exists (select from pg_roles where rolname = part) then
            execute format('create role %I login', part);
        end if;
    end loop;
end
$do$;

-- No part is a superuser or may create roles or databases, whatever it was before.
alter role {api} nosuperuser nocreatedb nocreaterole noinherit;
alter role {loader} nosuperuser nocreatedb nocreaterole noinherit;
alter role {gate} nosuperuser nocreatedb nocreaterole noinherit;
alter role {dbt} nosuperuser nocreatedb nocreaterole noinherit;

-- The warehouse: only the parts may connect (and the owner); nothing else that lives on the server.
revoke connect, temporary on database {database} from public;
grant connect, temporary on database {database} to {api}, {loader}, {gate}, {dbt}, {reader};
-- Nothing in the schemas for anyone unless granted below.
revoke create on schema public from public;
revoke all on schema app, staging, pages from public;

-- api -----------------------------------------------------------------------------------------------------
grant usage on schema app, staging, marts to {api};
grant select, insert on app.customers to {api};
grant update (password_hash, updated_at, password_changed_at) on app.customers to {api};
grant select, insert, update, delete on app.login_failures to {api};
grant select on staging.purchase_events, staging.purchase_events_rejected, staging.loaded_batches to {api};

-- loader --------------------------------------------------------------------------------------------------
grant usage on schema app, staging to {loader};
grant select (customer_id) on app.customers to {loader};
grant select, insert on staging.purchase_events, staging.purchase_events_rejected, staging.loaded_batches
    to {loader};
grant update (replayed_at) on staging.purchase_events_rejected to {loader};
grant select, insert, update on staging.kafka_offsets, staging.kafka_log_ends to {loader};
grant usage on all sequences in schema staging to {loader};

-- gate ----------------------------------------------------------------------------------------------------
grant usage on schema app, staging to {gate};
grant select (customer_id) on app.customers to {gate};
grant select on staging.purchase_events, staging.loaded_batches to {gate};
grant update (checked_at) on staging.loaded_batches to {gate};

-- dbt -----------------------------------------------------------------------------------------------------
create schema if not exists marts_staging;
alter schema marts owner to {dbt};
alter schema marts_staging owner to {dbt};
grant usage on schema app, staging to {dbt};
grant select (customer_id, username, created_at, updated_at) on app.customers to {dbt};
grant select on staging.purchase_events_passed to {dbt};
-- Models built before dbt had a role of its own belong to the owner: hand them over, so that dbt can
-- replace them (the reader's views over staging stay the owner's: dbt never touches them).
do $do$
declare
    relation record;
begin
    for relation in
        select c.oid::regclass as name, c.relkind
        from pg_class c join pg_namespace n on n.oid = c.relnamespace
        where n.nspname in ('marts', 'marts_staging') and c.relkind in ('r', 'v', 'm', 'p')
            and pg_get_userbyid(c.relowner) <> {dbt_literal}
            and c.oid::regclass::text not in (
                'marts.pipeline_freshness', 'marts.staged_event_loads', 'marts.rejected_events_recent',
                'marts.partition_lag')
    loop
        execute format('alter %s %s owner to %I',
                       case relation.relkind when 'v' then 'view' when 'm' then 'materialized view' else 'table' end,
                       relation.name, {dbt_literal});
    end loop;
end
$do$;
-- What dbt builds, the API and Grafana may read at once (every run replaces some tables).
alter default privileges for role {dbt} in schema marts grant select on tables to {api}, {reader};
grant select on all tables in schema marts to {api};

-- pages ---------------------------------------------------------------------------------------------------
do $do$
begin
    if not exists (select from pg_roles where rolname = {pages_literal}) then
        execute format('create role %I nologin', {pages_literal});
    end if;
end
$do$;
alter role {pages} nologin nosuperuser nocreatedb nocreaterole;
grant usage on schema pages to {pages}, {gate}, {dbt};
grant select on pages.dbt_docs, pages.data_docs to {pages};
grant select, insert, update, delete on pages.data_docs to {gate};
grant select, insert, update, delete on pages.dbt_docs to {dbt};
-- The gate's login may work as the pages' reader (SET ROLE); it inherits nothing from it (noinherit).
grant {pages} to {gate};
