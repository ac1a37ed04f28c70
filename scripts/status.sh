#!/usr/bin/env bash
# What `make up` started and still runs: honcho's processes (each in a session of its own), the embedded
# broker and, with AIRFLOW_EXECUTOR=celery, the Celery workers (each a session of its own, outside honcho), by pid.
set -uo pipefail
PIDFILE="$RUN_DIR/stack.pid"
BROKER_PIDFILE="$RUN_DIR/broker.pid"
alive() { local state; state=$(ps -o stat= -p "$1" 2>/dev/null) && [ -n "$state" ] && [[ $state != Z* ]]; }
if [ -f "$PIDFILE" ] && alive "$(cat "$PIDFILE")"; then
  pid=$(cat "$PIDFILE")
  pids=$("$PROJECT_ROOT/.venv/bin/python" - "$pid" <<'PY'
import sys, psutil
root = psutil.Process(int(sys.argv[1]))
print(",".join(str(p.pid) for p in [root, *root.children(recursive=True)]))
PY
)
  echo "stack running (honcho pid $pid):"
  ps -o pid,pgid,rss,etime,args -p "$pids" | cut -c1-160
else
  echo "stack not running"
fi
broker=$(cat "$BROKER_PIDFILE" 2>/dev/null)
if [ -n "$broker" ] && alive "$broker" && tr '\0' ' ' < "/proc/$broker/cmdline" 2>/dev/null | grep -q -- "broker --listener-url tcp://"; then
  echo "embedded broker running (pid $broker, $KAFKA_BOOTSTRAP_SERVERS; log $LOG_DIR/broker.log):"
  ps -o pid,pgid,rss,etime,args -p "$broker" | cut -c1-160
elif [ "$KAFKA_MODE" = external ]; then
  echo "broker: external ($KAFKA_BOOTSTRAP_SERVERS)"
else
  echo "embedded broker not running"
fi
for file in "$RUN_DIR"/worker-*.pid; do
  [ -f "$file" ] || continue
  n=${file##*/worker-}; n=${n%.pid}; pid=$(cat "$file" 2>/dev/null)
  if [ -n "$pid" ] && alive "$pid" && tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null | grep -qE -- "purchases.worker --name worker-$n |celery@worker-$n:"; then
    pids=$("$PROJECT_ROOT/.venv/bin/python" - "$pid" <<'PY'
import sys, psutil
root = psutil.Process(int(sys.argv[1]))
print(",".join(str(p.pid) for p in [root, *root.children(recursive=True)]))
PY
)
    echo "Celery worker-$n running (pid $pid; log $LOG_DIR/worker-$n.log):"
    ps -o pid,pgid,rss,etime,args -p "$pids" | cut -c1-160
  else
    echo "Celery worker-$n not running"
  fi
done
