#!/usr/bin/env bash
# Stops what `make up` started: honcho (pid in $RUN_DIR/stack.pid) and the process groups of everything
# it spawned, and nothing else.
set -uo pipefail
PIDFILE="$RUN_DIR/stack.pid"
if [ ! -f "$PIDFILE" ]; then echo "nothing to stop (no $PIDFILE)"; exit 0; fi
pid=$(cat "$PIDFILE")
if kill -0 "$pid" 2>/dev/null; then
  # honcho starts each process in a session of its own: note those groups before asking honcho to stop.
  groups=$("$PROJECT_ROOT/.venv/bin/python" - "$pid" <<'PY'
import os, sys, psutil
root = psutil.Process(int(sys.argv[1]))
print(" ".join(sorted({str(os.getpgid(p.pid)) for p in [root, *root.children(recursive=True)]})))
PY
)
  echo "stopping the stack (pid $pid)"
  kill -TERM "$pid" 2>/dev/null
  for _ in $(seq 1 30); do
    alive=""
    for g in $groups; do pgrep -g "$g" > /dev/null && alive="$alive $g"; done
    [ -z "$alive" ] && break
    sleep 1
  done
  if [ -n "$alive" ]; then
    echo "process groups$alive did not stop in 30 s; killing them"
    for g in $alive; do kill -KILL -- "-$g" 2>/dev/null; done
  fi
fi
rm -f "$PIDFILE"
echo "stopped"
