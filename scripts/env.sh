# Sourced by the Makefile and the scripts. The product's settings are defined once, with their defaults, in
# purchases/settings.py (docs/operations.md lists them); this file only sets up what other programs need and
# cannot default themselves: where the local stack keeps its files, its generated secrets, Airflow's own
# configuration, and the variables derived from the settings (Airflow's connections, dbt's profile).
# Set any variable in the environment to override it.
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export PROJECT_ROOT="$ROOT"

export RUN_DIR="${RUN_DIR:-$ROOT/.run}" LOG_DIR="${LOG_DIR:-$ROOT/logs}"
export SECRETS_DIR="${SECRETS_DIR:-$ROOT/.secrets}"
mkdir -p "$RUN_DIR" "$LOG_DIR"
# Secrets: taken from the environment, else generated once into files only their owner can read.
(umask 077 && mkdir -p "$SECRETS_DIR") && chmod 700 "$SECRETS_DIR"
_secret() {
  local f="$SECRETS_DIR/$1"
  [ -s "$f" ] || (umask 077 && python3 -c 'import secrets; print(secrets.token_urlsafe(48))' > "$f")
  chmod 600 "$f"; cat "$f"
}
export JWT_SECRET="${JWT_SECRET:-$(_secret jwt_secret)}"
export GRAFANA_READER_PASSWORD="${GRAFANA_READER_PASSWORD:-$(_secret grafana_reader_password)}"
# The warehouse's roles, one per part (purchases/roles.py); WAREHOUSE_DSN stays the owner's, for setting up.
export API_DB_PASSWORD="${API_DB_PASSWORD:-$(_secret api_db_password)}"
export LOADER_DB_PASSWORD="${LOADER_DB_PASSWORD:-$(_secret loader_db_password)}"
export GATE_DB_PASSWORD="${GATE_DB_PASSWORD:-$(_secret gate_db_password)}"
export DBT_DB_PASSWORD="${DBT_DB_PASSWORD:-$(_secret dbt_db_password)}"

# Airflow 3's own configuration: its home inside the project, LocalExecutor, the UI's address and login.
export AIRFLOW_HOST="${AIRFLOW_HOST:-127.0.0.1}" AIRFLOW_PORT="${AIRFLOW_PORT:-8080}"
export AIRFLOW_ADMIN_USER="${AIRFLOW_ADMIN_USER:-admin}" AIRFLOW_ADMIN_PASSWORD="${AIRFLOW_ADMIN_PASSWORD:-admin}"
export AIRFLOW_HOME="${AIRFLOW_HOME:-$ROOT/.airflow}"
export AIRFLOW__CORE__DAGS_FOLDER="${AIRFLOW__CORE__DAGS_FOLDER:-$ROOT/dags}"
export AIRFLOW__CORE__PLUGINS_FOLDER="${AIRFLOW__CORE__PLUGINS_FOLDER:-$ROOT/plugins}"
# Celery mode: AIRFLOW_EXECUTOR=celery runs Airflow's tasks on CELERY_WORKERS Celery workers (default 2), each
# a process of its own with its own name, directory (under CELERY_WORKERS_DIR) and address, sharing no written
# file (purchases/worker.py). The broker is Redis (AIRFLOW__CELERY__BROKER_URL; one database per stack: two
# stacks on one database would run each other's tasks); results go to Airflow's database (the provider's
# default). A task whose worker dies stops heartbeating and is failed, then retried on another worker, after
# TASK_INSTANCE_HEARTBEAT_TIMEOUT (Airflow's default is 300 s). Unset (or `local`): the LocalExecutor below.
if [ "${AIRFLOW_EXECUTOR:-local}" = celery ]; then
  export AIRFLOW__CORE__EXECUTOR=CeleryExecutor
  # One for every component: each worker has an Airflow home of its own, whose airflow.cfg would otherwise
  # get a random one, and the api-server could not read the task logs a worker serves.
  export AIRFLOW__API__SECRET_KEY="${AIRFLOW__API__SECRET_KEY:-$(_secret airflow_api_secret_key)}"
  export CELERY_WORKERS="${CELERY_WORKERS:-2}" CELERY_WORKERS_DIR="${CELERY_WORKERS_DIR:-$RUN_DIR/workers}"
  export AIRFLOW__CELERY__BROKER_URL="${AIRFLOW__CELERY__BROKER_URL:-redis://127.0.0.1:6379/0}"
  export AIRFLOW__CELERY__WORKER_CONCURRENCY="${AIRFLOW__CELERY__WORKER_CONCURRENCY:-4}"
  # Longer than any task runs: a message is handed to another worker only once its worker had it this long
  # unacknowledged (acks_late, the provider's default); the heartbeat timeout is what retries a lost task.
  export AIRFLOW__CELERY_BROKER_TRANSPORT_OPTIONS__VISIBILITY_TIMEOUT="${AIRFLOW__CELERY_BROKER_TRANSPORT_OPTIONS__VISIBILITY_TIMEOUT:-3600}"
  export AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT="${AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT:-60}"
  export AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL="${AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL:-10}"
fi
export AIRFLOW__CORE__EXECUTOR="${AIRFLOW__CORE__EXECUTOR:-LocalExecutor}"
# Task slots. Under load the loader holds 3-6 (a partition task each, and the next run's taking over), the
# gate and the dbt build one each, and a transform run's ~25 short model tasks report after its build: with 8,
# they queued behind each other for a minute and held the next transform run back.
export AIRFLOW__CORE__PARALLELISM="${AIRFLOW__CORE__PARALLELISM:-16}"
export AIRFLOW__CORE__LOAD_EXAMPLES=False
export AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION=False
export AIRFLOW__API__HOST="$AIRFLOW_HOST" AIRFLOW__API__PORT="$AIRFLOW_PORT"
export AIRFLOW__API__BASE_URL="${AIRFLOW__API__BASE_URL:-http://$AIRFLOW_HOST:$AIRFLOW_PORT}"
export AIRFLOW__CORE__EXECUTION_API_SERVER_URL="${AIRFLOW__CORE__EXECUTION_API_SERVER_URL:-http://$AIRFLOW_HOST:$AIRFLOW_PORT/execution/}"
export AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS="${AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS:-$AIRFLOW_ADMIN_USER:admin}"
export AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE="${AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE:-$SECRETS_DIR/airflow_passwords.json}"
(umask 077 && printf '{"%s": "%s"}\n' "$AIRFLOW_ADMIN_USER" "$AIRFLOW_ADMIN_PASSWORD" \
  > "$AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE" && chmod 600 "$AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE")
export AIRFLOW__API_AUTH__JWT_SECRET="${AIRFLOW__API_AUTH__JWT_SECRET:-$(_secret airflow_jwt_secret)}"
export AIRFLOW__CORE__FERNET_KEY="${AIRFLOW__CORE__FERNET_KEY:-}"
export AIRFLOW__SCHEDULER__MIN_FILE_PROCESS_INTERVAL="${AIRFLOW__SCHEDULER__MIN_FILE_PROCESS_INTERVAL:-30}"
export AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL="${AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL:-30}"
export AIRFLOW__COSMOS__ENABLE_TELEMETRY="${AIRFLOW__COSMOS__ENABLE_TELEMETRY:-False}"  # no usage data sent out
export AIRFLOW__LOGGING__BASE_LOG_FOLDER="${AIRFLOW__LOGGING__BASE_LOG_FOLDER:-$LOG_DIR/airflow}"

# Derived from purchases/settings.py (a variable already set is kept): Airflow's connections (AIRFLOW_CONN_*)
# and metadata database, dbt's profile variables (DBT_*), and the few settings the scripts read themselves.
if [ -x "$ROOT/.venv/bin/python" ]; then
  eval "$(cd "$ROOT" && .venv/bin/python -m purchases.settings exports)"
fi
