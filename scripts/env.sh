# Sourced by the Makefile and the scripts: every setting with its working local default.
# Set any of these in the environment to override it (README.md, "Settings").
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export PROJECT_ROOT="$ROOT"

export PGHOST="${PGHOST:-127.0.0.1}" PGPORT="${PGPORT:-5432}" PGUSER="${PGUSER:-postgres}"
export WAREHOUSE_DB="${WAREHOUSE_DB:-purchases}"
export WAREHOUSE_DSN="${WAREHOUSE_DSN:-postgresql://$PGUSER@$PGHOST:$PGPORT/$WAREHOUSE_DB}"
export AIRFLOW_DB="${AIRFLOW_DB:-airflow}"

export KAFKA_HOST="${KAFKA_HOST:-127.0.0.1}" KAFKA_PORT="${KAFKA_PORT:-9092}"
export KAFKA_BOOTSTRAP_SERVERS="${KAFKA_BOOTSTRAP_SERVERS:-$KAFKA_HOST:$KAFKA_PORT}"
export PURCHASES_TOPIC="${PURCHASES_TOPIC:-purchases}" PURCHASES_PARTITIONS="${PURCHASES_PARTITIONS:-3}"
# "embedded" starts the in-memory tansu broker; "external" uses whatever serves KAFKA_BOOTSTRAP_SERVERS.
export KAFKA_MODE="${KAFKA_MODE:-embedded}"

export API_HOST="${API_HOST:-127.0.0.1}" API_PORT="${API_PORT:-8000}" API_WORKERS="${API_WORKERS:-1}"
export AIRFLOW_HOST="${AIRFLOW_HOST:-127.0.0.1}" AIRFLOW_PORT="${AIRFLOW_PORT:-8080}"
export AIRFLOW_ADMIN_USER="${AIRFLOW_ADMIN_USER:-admin}" AIRFLOW_ADMIN_PASSWORD="${AIRFLOW_ADMIN_PASSWORD:-admin}"

export RUN_DIR="${RUN_DIR:-$ROOT/.run}" LOG_DIR="${LOG_DIR:-$ROOT/logs}"
export SECRETS_DIR="${SECRETS_DIR:-$ROOT/.secrets}"
mkdir -p "$RUN_DIR" "$LOG_DIR" "$SECRETS_DIR"

# Secrets: taken from the environment, else generated once into a git-ignored file.
_secret() { local f="$SECRETS_DIR/$1"; [ -s "$f" ] || python3 -c 'import secrets; print(secrets.token_urlsafe(48))' > "$f"; cat "$f"; }
export JWT_SECRET="${JWT_SECRET:-$(_secret jwt_secret)}"
export GRAFANA_READER_PASSWORD="${GRAFANA_READER_PASSWORD:-$(_secret grafana_reader_password)}"

# Airflow 3: its own home inside the project, metadata in Postgres, LocalExecutor.
export AIRFLOW_HOME="${AIRFLOW_HOME:-$ROOT/.airflow}"
export AIRFLOW__CORE__DAGS_FOLDER="${AIRFLOW__CORE__DAGS_FOLDER:-$ROOT/dags}"
export AIRFLOW__CORE__PLUGINS_FOLDER="${AIRFLOW__CORE__PLUGINS_FOLDER:-$ROOT/plugins}"
export AIRFLOW__CORE__EXECUTOR="${AIRFLOW__CORE__EXECUTOR:-LocalExecutor}"
export AIRFLOW__CORE__PARALLELISM="${AIRFLOW__CORE__PARALLELISM:-8}"
export AIRFLOW__CORE__LOAD_EXAMPLES=False
export AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION=False
export AIRFLOW__DATABASE__SQL_ALCHEMY_CONN="${AIRFLOW__DATABASE__SQL_ALCHEMY_CONN:-postgresql+psycopg2://$PGUSER@$PGHOST:$PGPORT/$AIRFLOW_DB}"
export AIRFLOW__API__HOST="$AIRFLOW_HOST" AIRFLOW__API__PORT="$AIRFLOW_PORT"
export AIRFLOW__API__BASE_URL="${AIRFLOW__API__BASE_URL:-http://$AIRFLOW_HOST:$AIRFLOW_PORT}"
export AIRFLOW__CORE__EXECUTION_API_SERVER_URL="${AIRFLOW__CORE__EXECUTION_API_SERVER_URL:-http://$AIRFLOW_HOST:$AIRFLOW_PORT/execution/}"
export AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS="${AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS:-$AIRFLOW_ADMIN_USER:admin}"
export AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE="${AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE:-$SECRETS_DIR/airflow_passwords.json}"
printf '{"%s": "%s"}\n' "$AIRFLOW_ADMIN_USER" "$AIRFLOW_ADMIN_PASSWORD" > "$AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"
export AIRFLOW__API_AUTH__JWT_SECRET="${AIRFLOW__API_AUTH__JWT_SECRET:-$(_secret airflow_jwt_secret)}"
export AIRFLOW__CORE__FERNET_KEY="${AIRFLOW__CORE__FERNET_KEY:-}"
export AIRFLOW__SCHEDULER__MIN_FILE_PROCESS_INTERVAL="${AIRFLOW__SCHEDULER__MIN_FILE_PROCESS_INTERVAL:-30}"
export AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL="${AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL:-30}"
export AIRFLOW__COSMOS__ENABLE_TELEMETRY="${AIRFLOW__COSMOS__ENABLE_TELEMETRY:-False}"  # no usage data sent out
export AIRFLOW__LOGGING__BASE_LOG_FOLDER="${AIRFLOW__LOGGING__BASE_LOG_FOLDER:-$LOG_DIR/airflow}"

# Connections for the DAGs, the Airflow way: AIRFLOW_CONN_* environment variables.
export AIRFLOW_CONN_WAREHOUSE="${AIRFLOW_CONN_WAREHOUSE:-postgresql://$PGUSER@$PGHOST:$PGPORT/$WAREHOUSE_DB}"
# (JSON braces inside ${VAR:-...} would end the expansion early, hence the separate default)
_kafka_conn="{\"conn_type\": \"kafka\", \"extra\": {\"bootstrap.servers\": \"$KAFKA_BOOTSTRAP_SERVERS\"}}"
export AIRFLOW_CONN_KAFKA_DEFAULT="${AIRFLOW_CONN_KAFKA_DEFAULT:-$_kafka_conn}"

# dbt reads its profile from these (dbt/profiles.yml has no secrets).
export DBT_PROFILES_DIR="${DBT_PROFILES_DIR:-$ROOT/dbt}" DBT_PROJECT_DIR="${DBT_PROJECT_DIR:-$ROOT/dbt}"
export DBT_HOST="${DBT_HOST:-$PGHOST}" DBT_PORT="${DBT_PORT:-$PGPORT}" DBT_USER="${DBT_USER:-$PGUSER}"
export DBT_PASSWORD="${DBT_PASSWORD:-}" DBT_DBNAME="${DBT_DBNAME:-$WAREHOUSE_DB}"
