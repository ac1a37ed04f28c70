# Sourced by up.sh, down.sh and status.sh: which of the processes `make up` started still run. Each is told
# by its pid file and its command line, so a recycled pid is never taken for one of them. Expects RUN_DIR.

# Process states come from ps, not kill -0: a zombie (exited, not yet reaped) counts as gone.
alive() { local state; state=$(ps -o stat= -p "$1" 2>/dev/null) && [ -n "$state" ] && [[ $state != Z* ]]; }

# pid_if_running PIDFILE PATTERN: the pid in PIDFILE if that process runs and its command line matches the
# extended regular expression PATTERN; empty otherwise.
pid_if_running() {
  local pid
  pid=$(cat "$1" 2>/dev/null) || return 0
  [ -n "$pid" ] && alive "$pid" && tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null | grep -qE -- "$2" && echo "$pid"
  return 0
}

# The embedded broker's pid (it runs in a session of its own, outside honcho).
broker_pid() { pid_if_running "$RUN_DIR/broker.pid" "broker --listener-url tcp://"; }

# Celery worker N's pid (AIRFLOW_EXECUTOR=celery; Celery renames its main process celery@worker-N:MainProcess).
worker_pid() { pid_if_running "$RUN_DIR/worker-$1.pid" "purchases.worker --name worker-$1 |celery@worker-$1:"; }

# The numbers N of the workers with a pid file, running or not.
worker_numbers() {
  local file n
  for file in "$RUN_DIR"/worker-*.pid; do
    [ -f "$file" ] || continue
    n=${file##*/worker-}; echo "${n%.pid}"
  done
}
