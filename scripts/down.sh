#!/usr/bin/env bash
# Stops what `make up` started, and nothing else, without losing an accepted purchase:
#  1. the ingest API first (no new purchases are accepted), then the Celery workers of AIRFLOW_EXECUTOR=celery
#     (pids in $RUN_DIR/worker-N.pid) and their task processes, then the rest of honcho's processes (Airflow):
#     honcho (pid in $RUN_DIR/stack.pid) and the process groups of everything it spawned;
#  2. the embedded broker (pid in $RUN_DIR/broker.pid) keeps its records in memory only: first every
#     partition is drained into staging up to its log end (`python -m purchases.cli drain`, at most
#     DRAIN_TIMEOUT_SECONDS), then it is stopped. If the drain cannot finish, the broker is left running and
#     this exits non-zero, saying what is not loaded; FORCE=1 stops it anyway (and says what is lost).
# With KAFKA_MODE=external the broker is not ours and keeps its log: nothing is drained.
set -uo pipefail
cd "$PROJECT_ROOT"
PY="$PROJECT_ROOT/.venv/bin/python"
PIDFILE="$RUN_DIR/stack.pid"
BROKER_PIDFILE="$RUN_DIR/broker.pid"
DRAIN_TIMEOUT_SECONDS="${DRAIN_TIMEOUT_SECONDS:-120}"
FORCE="${FORCE:-}"
[ "$FORCE" = 0 ] && FORCE=""

source scripts/processes.sh  # alive, broker_pid, worker_pid, worker_numbers
alive_groups() { # the process groups among "$@" that still have a live member
  ps -eo pgid=,stat= | awk -v want=" $* " '$2 !~ /^Z/ && index(want, " " $1 " ") { print $1 }' | sort -u | xargs
}
# stop_groups SECONDS WHAT PGID...: SIGTERM each process group, wait up to SECONDS for all to exit, then SIGKILL.
stop_groups() {
  local seconds=$1 what=$2 g alive; shift 2
  [ $# -eq 0 ] && return 0
  for g in "$@"; do kill -TERM -- "-$g" 2>/dev/null; done
  for _ in $(seq 1 $((seconds * 5))); do
    alive=$(alive_groups "$@"); [ -z "$alive" ] && return 0
    sleep 0.2
  done
  echo "$what (process groups $alive) did not stop in $seconds s; killing them"
  for g in $alive; do kill -KILL -- "-$g" 2>/dev/null; done
  for _ in $(seq 1 25); do [ -z "$(alive_groups $alive)" ] && return 0; sleep 0.2; done
}
# stack_groups HONCHO_PID [api]: the process groups of honcho and everything it spawned (honcho starts each
# process in a session of its own, and Airflow's task processes start their own too); with "api", only the
# groups of the ingest API.
stack_groups() {
  "$PY" - "$@" <<'PY'
import os, sys, psutil
try:
    root = psutil.Process(int(sys.argv[1]))
    processes = [root, *root.children(recursive=True)]
except psutil.Error:
    processes = []
groups = set()
for p in processes:
    try:
        command = " ".join(p.cmdline())
        if len(sys.argv) < 3 or "ingest_api.main:app" in command or "-m ingest_api" in command:
            groups.add(os.getpgid(p.pid))
    except (psutil.Error, ProcessLookupError):
        pass
print(" ".join(map(str, sorted(groups))))
PY
}

# The Celery workers' pids (each told by its command line, so a recycled pid is never taken for one), and
# the process groups of the workers and everything they spawned (task supervisors and tasks).
worker_pids() { local n; for n in $(worker_numbers); do worker_pid "$n"; done; }
worker_groups() { local pid; for pid in $(worker_pids); do stack_groups "$pid"; done | xargs; }
stop_workers() { # SIGTERM: Celery's warm shutdown; the tasks get it too, and are failed (retried at the next up)
  local workers; workers=$(worker_pids | xargs)
  [ -z "$workers" ] && return 0
  echo "stopping the Celery workers (pids $workers) and their tasks"
  stop_groups 15 "the Celery workers" $(worker_groups)
}

# --- 1. honcho's processes: the API first, then the Celery workers, then the rest ---------------------------
if [ -f "$PIDFILE" ]; then
  pid=$(cat "$PIDFILE")
  if alive "$pid"; then
    before=$(stack_groups "$pid")
    api_groups=$(stack_groups "$pid" api)
    if [ -n "$api_groups" ]; then
      echo "stopping the ingest API (process group $api_groups): no new purchases are accepted"
      stop_groups 30 "the ingest API" $api_groups
    fi
    # The Celery workers before the api-server, so that the tasks they stop can still report it.
    stop_workers
    # Listed after the API stopped: Airflow may have started task processes meanwhile. Killing one in the
    # middle of a batch is safe (its transaction is rolled back), and the drain below loads what it did not.
    all_groups=$(echo $before $(stack_groups "$pid") | tr ' ' '\n' | sort -un | xargs)
    echo "stopping the rest of the stack (honcho, pid $pid: Airflow)"
    kill -TERM "$pid" 2>/dev/null
    stop_groups 15 "the stack" $all_groups
  fi
  rm -f "$PIDFILE"
fi
# Workers without honcho (it had crashed): they run on, as machines of their own would.
stop_workers
rm -f "$RUN_DIR"/worker-*.pid

# --- 2. the embedded broker: drained, then stopped -----------------------------------------------------------
broker=$(broker_pid)
if [ -n "$broker" ]; then
  if [ -n "$FORCE" ]; then
    echo "FORCE=1: stopping the embedded broker (pid $broker) without draining it"
    "$PY" -m purchases.cli drain --check --timeout 10 || echo "(so what it held is unknown)"
    stop_groups 10 "the broker" "$broker"
    echo "the broker is stopped: records it held that were not in staging (above) are lost"
  else
    echo "draining the embedded broker (pid $broker) into staging before stopping it (at most $DRAIN_TIMEOUT_SECONDS s;" \
         "DRAIN_TIMEOUT_SECONDS)"
    if ! "$PY" -m purchases.cli drain --timeout "$DRAIN_TIMEOUT_SECONDS"; then
      cat >&2 <<MSG

The embedded broker (pid $broker, $KAFKA_BOOTSTRAP_SERVERS) is LEFT RUNNING: it keeps its records in memory
only, and stopping it now would lose the records above. Fix what keeps them from loading (is Postgres
up? see the errors above), then run \`make down\` again; or \`make up\`: it reuses this broker, and the loader
goes on from where staging is. To stop it anyway and lose those records: make down FORCE=1
MSG
      exit 1
    fi
    stop_groups 10 "the broker" "$broker"
  fi
  rm -f "$BROKER_PIDFILE"
elif [ "$KAFKA_MODE" = embedded ]; then
  [ -f "$BROKER_PIDFILE" ] && echo "the embedded broker (pid $(cat "$BROKER_PIDFILE")) had already stopped"
  rm -f "$BROKER_PIDFILE"
else
  echo "KAFKA_MODE=external: the broker keeps its log, so nothing is drained; the loader goes on from" \
       "staging.kafka_offsets at the next make up"
fi
echo "stopped"
