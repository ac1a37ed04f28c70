#!/bin/bash
# Runs as the superuser when the postgres container initialises an empty data volume:
#   - the warehouse database, $WAREHOUSE_DB (its tables, its roles and their grants come from warehouse-init,
#     which also revokes CONNECT on it from PUBLIC);
#   - Airflow's metadata database, $AIRFLOW_DB, owned by a role of its own, `airflow` ($AIRFLOW_DB_PASSWORD),
#     so that no part of Airflow connects as the superuser;
#   - CONNECT on the `postgres` (and $POSTGRES_DB) and Airflow databases revoked from PUBLIC: the warehouse's roles (Grafana's
#     included) cannot connect to them, nor `airflow` to the warehouse or to `postgres`.
# Idempotent. On a volume initialised before (or after changing AIRFLOW_DB_PASSWORD in .env), run it by hand:
#   docker compose up -d postgres && docker compose exec postgres bash /docker-entrypoint-initdb.d/10-databases.sh
# which also hands over to `airflow` what the superuser owned in Airflow's database.
set -euo pipefail
: "${AIRFLOW_DB_PASSWORD:?set AIRFLOW_DB_PASSWORD (docker-compose.yml passes it from .env)}"

run_sql() {
  psql -v ON_ERROR_STOP=1 --no-psqlrc --quiet --username "$POSTGRES_USER" --dbname "$1" \
    -v warehouse_db="$WAREHOUSE_DB" -v airflow_db="$AIRFLOW_DB" -v airflow_password="$AIRFLOW_DB_PASSWORD" \
    -v superuser_db="${POSTGRES_DB:-$POSTGRES_USER}"
}

run_sql postgres <<'SQL'
select format('create database %I', :'warehouse_db')
 where not exists (select from pg_database where datname = :'warehouse_db') \gexec

select 'create role airflow' where not exists (select from pg_roles where rolname = 'airflow') \gexec
alter role airflow with login nosuperuser nocreatedb nocreaterole noreplication nobypassrls
  password :'airflow_password';
select format('create database %I owner airflow', :'airflow_db')
 where not exists (select from pg_database where datname = :'airflow_db') \gexec
select format('alter database %I owner to airflow', :'airflow_db') \gexec

select format('revoke connect, temporary on database %I from public', datname)
  from pg_database where datname in ('postgres', :'superuser_db', :'airflow_db') \gexec
SQL

# What the superuser made in Airflow's database before it had a role of its own (nothing, on a new volume).
run_sql "$AIRFLOW_DB" <<'SQL'
select format('alter schema %I owner to airflow', nspname)
  from pg_namespace
 where nspname not like 'pg\_%' and nspname not in ('information_schema', 'public')
   and nspowner <> 'airflow'::regrole \gexec
select format('alter %s %s owner to airflow',
              case c.relkind when 'v' then 'view' when 'm' then 'materialized view' when 'S' then 'sequence'
                             when 'f' then 'foreign table' else 'table' end,
              c.oid::regclass)
  from pg_class c join pg_namespace n on n.oid = c.relnamespace
 where n.nspname not like 'pg\_%' and n.nspname <> 'information_schema'
   and c.relkind in ('r', 'p', 'v', 'm', 'S', 'f') and c.relowner <> 'airflow'::regrole
   -- a serial column's sequence follows its table; an extension's objects stay the extension's
   and not exists (select from pg_depend d where d.classid = 'pg_class'::regclass and d.objid = c.oid
                     and (d.deptype = 'e' or (c.relkind = 'S' and d.deptype in ('a', 'i'))))
 order by c.relkind = 'S' \gexec
select format('alter type %s owner to airflow', t.oid::regtype)
  from pg_type t join pg_namespace n on n.oid = t.typnamespace
 where n.nspname not like 'pg\_%' and n.nspname <> 'information_schema'
   and t.typtype in ('e', 'd') and t.typowner <> 'airflow'::regrole \gexec
select format('alter routine %s owner to airflow', p.oid::regprocedure)
  from pg_proc p join pg_namespace n on n.oid = p.pronamespace
 where n.nspname not like 'pg\_%' and n.nspname <> 'information_schema'
   and p.proowner <> 'airflow'::regrole
   and not exists (select from pg_depend d where d.classid = 'pg_proc'::regclass and d.objid = p.oid and d.deptype = 'e')
\gexec
SQL
