#!/usr/bin/env bash
# Starts the whole pipeline in the background and waits until each part is healthy. Harmless to run twice.
# Expects scripts/env.sh to be sourced (the Makefile does it).
set -euo pipefail
cd "$PROJECT_ROOT"
export PATH="$PROJECT_ROOT/.venv/bin:$PATH"
PIDFILE="$RUN_DIR/stack.pid"

step() { printf '==> %s\n' "$*"; }
wait_http() { # url seconds what
  local deadline=$((SECONDS + $2))
  until curl -fs -o /dev/null "$1"; do
    if (( SECONDS > deadline )); then echo "$3 did not answer at $1 within $2 s; see $LOG_DIR/stack.log" >&2; exit 1; fi
    if ! kill -0 "$(cat "$PIDFILE")" 2>/dev/null; then echo "the stack exited; see $LOG_DIR/stack.log" >&2; exit 1; fi
    sleep 1
  done
}

if [ -f "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; then
  step "already running (pid $(cat "$PIDFILE")); checking health"
else
  for port in "$API_PORT" "$AIRFLOW_PORT" $([ "$KAFKA_MODE" = embedded ] && echo "$KAFKA_PORT"); do
    if (echo > "/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      echo "port $port is already taken by another program; set the matching *_PORT variable" >&2; exit 1
    fi
  done
  step "warehouse database $WAREHOUSE_DB and its tables"
  python -m purchases.cli bootstrap-warehouse
  python -m purchases.roles
  step "Airflow metadata database $AIRFLOW_DB"
  psql -h "$PGHOST" -p "$PGPORT" -U "$PGUSER" -d postgres -tAc "select 1 from pg_database where datname = '$AIRFLOW_DB'" | grep -q 1 \
    || psql -h "$PGHOST" -p "$PGPORT" -U "$PGUSER" -d postgres -qc "create database \"$AIRFLOW_DB\""
  airflow db migrate > "$LOG_DIR/airflow-db-migrate.log" 2>&1 || { tail -20 "$LOG_DIR/airflow-db-migrate.log"; exit 1; }
  python -m purchases.cli fail-interrupted-runs
  step "dbt manifest (Cosmos renders the transform DAG from it)"
  python -m purchases.transform parse > "$LOG_DIR/dbt-parse.log" 2>&1 || { tail -20 "$LOG_DIR/dbt-parse.log"; exit 1; }

  processes="api airflow-api scheduler dag-processor triggerer"
  [ "$KAFKA_MODE" = embedded ] && processes="broker $processes"
  step "starting $processes (logs: $LOG_DIR)"
  # Its own session, so that `make down` can stop the whole process group by the one pid.
  setsid honcho start -f Procfile -d "$PROJECT_ROOT" $processes >> "$LOG_DIR/stack.log" 2>&1 < /dev/null &
  echo $! > "$PIDFILE"
fi

step "waiting for the broker on $KAFKA_BOOTSTRAP_SERVERS"
python -m purchases.cli wait-port "${KAFKA_BOOTSTRAP_SERVERS%%,*}" --timeout 60
python -m purchases.cli ensure-topic
step "waiting for the ingest API"
wait_http "http://$API_HOST:$API_PORT/healthz" 60 "the ingest API"
step "waiting for Airflow"
wait_http "http://$AIRFLOW_HOST:$AIRFLOW_PORT/api/v2/monitor/health" 180 "the Airflow api-server"
for dag in purchases_ingest purchases_quality purchases_transform; do
  for _ in $(seq 1 90); do
    airflow dags unpause "$dag" > /dev/null 2>&1 && break
    sleep 2
  done
done

cat <<MSG

Purchases Recorder is up.
  Web page and API   http://$API_HOST:$API_PORT/        (OpenAPI: http://$API_HOST:$API_PORT/docs)
  Airflow            http://$AIRFLOW_HOST:$AIRFLOW_PORT/   login: $AIRFLOW_ADMIN_USER / $AIRFLOW_ADMIN_PASSWORD
  Kafka broker       $KAFKA_BOOTSTRAP_SERVERS (topic $PURCHASES_TOPIC)
  Warehouse          $WAREHOUSE_DSN
  Logs               $LOG_DIR
Stop it with: make down
MSG
