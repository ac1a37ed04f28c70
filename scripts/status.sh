#!/usr/bin/env bash
set -uo pipefail
PIDFILE="$RUN_DIR/stack.pid"
if [ -f "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; then
  echo "running, process group $(cat "$PIDFILE"):"
  ps -o pid,rss,etime,args -g "$(cat "$PIDFILE")" | cut -c1-160
else
  echo "not running"
fi
