#!/usr/bin/env bash
# Starts the whole pipeline in the background and waits until each part is healthy. Harmless to run twice.
# Expects scripts/env.sh to be sourced (the Makefile does it).
set -euo pipefail
cd "$PROJECT_ROOT"
export PATH="$PROJECT_ROOT/.venv/bin:$PATH"
PIDFILE="$RUN_DIR/stack.pid"
# The embedded broker keeps its records in memory only, so it is not one of honcho's processes (honcho stops
# them all when any one exits): it runs in a session of its own, recorded here, and `make down` drains it
# into staging before stopping it. A broker left running (by a crash of the rest, or a refused drain) is
# reused, with everything it holds.
BROKER_PIDFILE="$RUN_DIR/broker.pid"
BROKER_ADDRESS="${KAFKA_BOOTSTRAP_SERVERS%%,*}"

step() { printf '==> %s\n' "$*"; }
source scripts/processes.sh  # alive, broker_pid, worker_pid
wait_http() { # url seconds what
  local deadline=$((SECONDS + $2))
  until curl -fs -o /dev/null "$1"; do
    if (( SECONDS > deadline )); then echo "$3 did not answer at $1 within $2 s; see $LOG_DIR/stack.log" >&2; exit 1; fi
    if ! alive "$(cat "$PIDFILE")"; then echo "the stack exited; see $LOG_DIR/stack.log" >&2; exit 1; fi
    sleep 1
  done
}

port_taken() { (echo > "/dev/tcp/$1/$2") 2>/dev/null; }  # host port

# Celery mode (AIRFLOW_EXECUTOR=celery, scripts/env.sh): CELERY_WORKERS workers, each `python -m purchases.worker`
# in a session of its own, outside honcho (a worker that dies must not stop the rest, as a machine would not),
# with its pid in $RUN_DIR/worker-N.pid, its log in $LOG_DIR/worker-N.log, its own directory
# $CELERY_WORKERS_DIR/worker-N and its own address 127.0.0.(10+N).
case "${AIRFLOW_EXECUTOR:-local}" in
  local) CELERY="" ;;
  celery) CELERY=1 ;;
  *) echo "AIRFLOW_EXECUTOR is local (the default) or celery, not '$AIRFLOW_EXECUTOR'" >&2; exit 1 ;;
esac
start_workers() {
  local n name running broker="${AIRFLOW__CELERY__BROKER_URL#*://}"
  broker="${broker##*@}"; broker="${broker%%/*}"
  [[ $broker == *:* ]] || broker="$broker:6379"
  if ! port_taken "${broker%:*}" "${broker##*:}"; then
    echo "the Celery broker $AIRFLOW__CELERY__BROKER_URL does not answer; start Redis or set AIRFLOW__CELERY__BROKER_URL" >&2
    exit 1
  fi
  for n in $(seq 1 "$CELERY_WORKERS"); do
    name="worker-$n"
    running=$(worker_pid "$n")
    if [ -n "$running" ]; then step "Celery $name already running (pid $running)"; continue; fi
    step "starting Celery $name (log: $LOG_DIR/$name.log, directory: $CELERY_WORKERS_DIR/$name)"
    rm -f "$RUN_DIR/$name.pid"
    setsid bash -c 'pidfile=$1; shift; echo $$ > "$pidfile"; exec "$@"' worker "$RUN_DIR/$name.pid" \
      python -m purchases.worker --name "$name" --home "$CELERY_WORKERS_DIR/$name" --address "127.0.0.$((10 + n))" \
      >> "$LOG_DIR/$name.log" 2>&1 < /dev/null &
    for _ in $(seq 1 50); do [ -s "$RUN_DIR/$name.pid" ] && break; sleep 0.1; done
  done
}
wait_workers() {
  local n name deadline=$((SECONDS + 180))
  for n in $(seq 1 "$CELERY_WORKERS"); do
    name="worker-$n"
    until grep -q "celery@$name ready" "$LOG_DIR/$name.log" 2>/dev/null; do
      if [ -z "$(worker_pid "$n")" ]; then
        echo "Celery $name exited; see $LOG_DIR/$name.log:" >&2; tail -5 "$LOG_DIR/$name.log" >&2; exit 1
      fi
      if (( SECONDS > deadline )); then echo "Celery $name not ready within 180 s; see $LOG_DIR/$name.log" >&2; exit 1; fi
      sleep 1
    done
  done
}
start_broker() {
  local running
  running=$(broker_pid)
  if [ -n "$running" ]; then
    if ! tr '\0' ' ' < "/proc/$running/cmdline" | grep -q -- "--listener-url tcp://$BROKER_ADDRESS "; then
      echo "the embedded broker of an earlier make up (pid $running) serves another address than" \
           "$BROKER_ADDRESS; run make down (with the settings it was started with) first" >&2
      exit 1
    fi
    step "reusing the embedded broker (pid $running) on $BROKER_ADDRESS, with the records it holds"
    return
  fi
  if port_taken "${BROKER_ADDRESS%:*}" "${BROKER_ADDRESS##*:}"; then
    echo "port ${BROKER_ADDRESS##*:} is already taken by another program; set KAFKA_BOOTSTRAP_SERVERS" >&2; exit 1
  fi
  step "starting the embedded broker on $BROKER_ADDRESS (log: $LOG_DIR/broker.log)"
  rm -f "$BROKER_PIDFILE"
  # A session of its own (neither honcho's nor the caller's), so it outlives both. It records its own pid,
  # which stays the broker's (python execs it), however setsid starts it.
  setsid bash -c 'echo $$ > "$1"; exec python -m purchases.cli broker' broker "$BROKER_PIDFILE" \
    >> "$LOG_DIR/broker.log" 2>&1 < /dev/null &
  for _ in $(seq 1 50); do [ -s "$BROKER_PIDFILE" ] && break; sleep 0.1; done
}

if [ -f "$PIDFILE" ] && alive "$(cat "$PIDFILE")"; then
  [ "$KAFKA_MODE" = embedded ] && start_broker
  step "already running (pid $(cat "$PIDFILE")); checking health"
else
  for port in "$API_PORT" "$AIRFLOW_PORT"; do
    if port_taken 127.0.0.1 "$port"; then
      echo "port $port is already taken by another program; set the matching *_PORT variable" >&2; exit 1
    fi
  done
  [ "$KAFKA_MODE" = embedded ] && start_broker
  step "warehouse $WAREHOUSE_DSN: database, migrations, roles"
  python -m purchases.cli bootstrap-warehouse
  python -m purchases.roles
  step "Airflow metadata database"
  python -m purchases.cli bootstrap-airflow-database
  airflow db migrate > "$LOG_DIR/airflow-db-migrate.log" 2>&1 || { tail -20 "$LOG_DIR/airflow-db-migrate.log"; exit 1; }
  python -m purchases.cli fail-interrupted-runs
  step "dbt manifest (Cosmos renders the transform DAG from it)"
  python -m purchases.transform parse > "$LOG_DIR/dbt-parse.log" 2>&1 || { tail -20 "$LOG_DIR/dbt-parse.log"; exit 1; }

  processes="api airflow-api scheduler dag-processor triggerer"
  step "starting $processes (logs: $LOG_DIR)"
  # Its own session, so that `make down` can stop the whole process group by the one pid. Everything but
  # the broker: honcho stops all of its processes when one of them exits.
  setsid honcho start -f Procfile -d "$PROJECT_ROOT" $processes >> "$LOG_DIR/stack.log" 2>&1 < /dev/null &
  echo $! > "$PIDFILE"
fi
[ -n "$CELERY" ] && start_workers

step "waiting for the broker on $KAFKA_BOOTSTRAP_SERVERS"
if [ "$KAFKA_MODE" = embedded ]; then
  deadline=$((SECONDS + 60))
  until port_taken "${BROKER_ADDRESS%:*}" "${BROKER_ADDRESS##*:}"; do
    if [ -z "$(broker_pid)" ]; then
      echo "the embedded broker exited; see $LOG_DIR/broker.log:" >&2; tail -5 "$LOG_DIR/broker.log" >&2; exit 1
    fi
    if (( SECONDS > deadline )); then echo "the embedded broker did not listen on $BROKER_ADDRESS within 60 s" >&2; exit 1; fi
    sleep 0.2
  done
else
  python -m purchases.cli wait-port "$BROKER_ADDRESS" --timeout 60
fi
python -m purchases.cli ensure-topic
step "waiting for the ingest API"
wait_http "http://$API_HOST:$API_PORT/healthz" 60 "the ingest API"
step "waiting for Airflow"
wait_http "http://$AIRFLOW_HOST:$AIRFLOW_PORT/api/v2/monitor/health" 180 "the Airflow api-server"
if [ -n "$CELERY" ]; then
  step "waiting for the $CELERY_WORKERS Celery workers"
  wait_workers
fi
for dag in purchases_ingest purchases_quality purchases_transform; do
  for _ in $(seq 1 90); do
    airflow dags unpause "$dag" > /dev/null 2>&1 && break
    sleep 2
  done
done

celery_line=""
[ -n "$CELERY" ] && celery_line=$'\n'"  Celery workers     $CELERY_WORKERS, broker $AIRFLOW__CELERY__BROKER_URL (logs: $LOG_DIR/worker-N.log)"
cat <<MSG

Purchases Recorder is up.
  Web page and API   http://$API_HOST:$API_PORT/        (OpenAPI: http://$API_HOST:$API_PORT/docs)
  Airflow            http://$AIRFLOW_HOST:$AIRFLOW_PORT/   login: $AIRFLOW_ADMIN_USER / $AIRFLOW_ADMIN_PASSWORD$celery_line
  Kafka broker       $KAFKA_BOOTSTRAP_SERVERS (topic $PURCHASES_TOPIC)
  Warehouse          $WAREHOUSE_DSN
  Logs               $LOG_DIR
Stop it with: make down
MSG
