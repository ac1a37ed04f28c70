#!/usr/bin/env bash
# What `make up` started and still runs: honcho's processes (each in a session of its own), the embedded
# broker and, with AIRFLOW_EXECUTOR=celery, the Celery workers (each a session of its own, outside honcho), by pid.
set -uo pipefail
PIDFILE="$RUN_DIR/stack.pid"
source "$PROJECT_ROOT/scripts/processes.sh"  # alive, broker_pid, worker_pid, worker_numbers
# The pids of a process and everything it started, comma-separated (for ps -p).
tree() {
  "$PROJECT_ROOT/.venv/bin/python" - "$1" <<'PY'
import sys, psutil
root = psutil.Process(int(sys.argv[1]))
print(",".join(str(p.pid) for p in [root, *root.children(recursive=True)]))
PY
}
if [ -f "$PIDFILE" ] && alive "$(cat "$PIDFILE")"; then
  pid=$(cat "$PIDFILE")
  echo "stack running (honcho pid $pid):"
  ps -o pid,pgid,rss,etime,args -p "$(tree "$pid")" | cut -c1-160
else
  echo "stack not running"
fi
broker=$(broker_pid)
if [ -n "$broker" ]; then
  echo "embedded broker running (pid $broker, $KAFKA_BOOTSTRAP_SERVERS; log $LOG_DIR/broker.log):"
  ps -o pid,pgid,rss,etime,args -p "$broker" | cut -c1-160
elif [ "$KAFKA_MODE" = external ]; then
  echo "broker: external ($KAFKA_BOOTSTRAP_SERVERS)"
else
  echo "embedded broker not running"
fi
for n in $(worker_numbers); do
  pid=$(worker_pid "$n")
  if [ -n "$pid" ]; then
    echo "Celery worker-$n running (pid $pid; log $LOG_DIR/worker-$n.log):"
    ps -o pid,pgid,rss,etime,args -p "$(tree "$pid")" | cut -c1-160
  else
    echo "Celery worker-$n not running"
  fi
done
