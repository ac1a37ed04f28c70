#!/bin/bash
# Runs once, when the postgres container initialises an empty data volume: the warehouse and the
# Airflow metadata databases. Tables, the grafana_reader role and the views come from warehouse-init.
set -euo pipefail
for db in "$WAREHOUSE_DB" "$AIRFLOW_DB"; do
  psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
    -tAc "select 1 from pg_database where datname = '$db'" | grep -q 1 \
    || psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres -c "create database \"$db\""
done
