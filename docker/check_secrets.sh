#!/bin/sh
# Refuses the stack's secrets while any is missing, still a "change-me" placeholder of .env.example, or too
# short: docker-compose.yml's one-shot `secrets-check` runs this first, and every other service waits for it
# to exit 0, so nothing starts with them. One line per refused variable, by name (never its value); exit 1.
#
#   passwords (database roles, admin logins): at least 16 characters of A-Z a-z 0-9 - . _ ~
#     (they go into connection URLs, Airflow's password file and Grafana's provisioning as they are)
#   keys (JWT_SECRET, AIRFLOW__API_AUTH__JWT_SECRET, AIRFLOW__API__SECRET_KEY): at least 32 bytes
#   AIRFLOW__CORE__FERNET_KEY: optional; if set, a Fernet key (44 characters of URL-safe base64)
#
# By hand, on a .env:  (set -a; . ./.env; sh docker/check_secrets.sh)
# Generate a password or a key:  python3 -c 'import secrets; print(secrets.token_urlsafe(32))'
# POSIX sh: it runs in python:3.11-slim (dash); LC_ALL=C makes lengths bytes and ranges ASCII.

LC_ALL=C
export LC_ALL

PASSWORD_MIN=16
KEY_MIN=32
PASSWORDS="POSTGRES_PASSWORD AIRFLOW_DB_PASSWORD API_DB_PASSWORD LOADER_DB_PASSWORD GATE_DB_PASSWORD
DBT_DB_PASSWORD GRAFANA_READER_PASSWORD GRAFANA_ADMIN_PASSWORD AIRFLOW_ADMIN_PASSWORD"
KEYS="JWT_SECRET AIRFLOW__API_AUTH__JWT_SECRET AIRFLOW__API__SECRET_KEY"
GENERATE="(generate one: python3 -c 'import secrets; print(secrets.token_urlsafe(32))')"

refused=0

refuse() {
    printf '%s: %s\n' "$1" "$2" >&2
    refused=$((refused + 1))
}

value_of() {
    eval "printf '%s' \"\${$1-}\""
}

bytes() {
    printf '%s' "$1" | wc -c | tr -d ' '
}

# has_other_than CHARACTERS VALUE: VALUE has a byte not in CHARACTERS (a bracket expression's inside)
has_other_than() {
    case $2 in
        *[!$1]*) return 0 ;;
    esac
    return 1
}

is_placeholder() {
    case $(printf '%s' "$1" | tr '[:upper:]' '[:lower:]') in
        *change-me* | *change_me* | *changeme*) return 0 ;;
    esac
    return 1
}

# check NAME MIN_BYTES password|key
check() {
    value=$(value_of "$1")
    if [ -z "$value" ]; then
        refuse "$1" "not set; set it in .env $GENERATE"
    elif is_placeholder "$value"; then
        refuse "$1" "still the change-me placeholder of .env.example; replace it $GENERATE"
    elif [ "$3" = password ] && has_other_than 'A-Za-z0-9._~-' "$value"; then
        refuse "$1" "only A-Z a-z 0-9 - . _ ~ in passwords (they go into connection URLs and files unescaped)"
    elif [ "$(bytes "$value")" -lt "$2" ]; then
        refuse "$1" "$(bytes "$value") bytes; at least $2 needed $GENERATE"
    fi
}

for name in $PASSWORDS; do
    check "$name" "$PASSWORD_MIN" password
done
for name in $KEYS; do
    check "$name" "$KEY_MIN" key
done

fernet=$(value_of AIRFLOW__CORE__FERNET_KEY)
if [ -n "$fernet" ]; then
    if is_placeholder "$fernet"; then
        refuse AIRFLOW__CORE__FERNET_KEY "still a change-me placeholder; leave it empty or set a Fernet key"
    elif [ "$(bytes "$fernet")" -ne 44 ] || has_other_than 'A-Za-z0-9_=-' "$fernet"; then
        refuse AIRFLOW__CORE__FERNET_KEY "not a Fernet key (44 characters of URL-safe base64; generate one: \
python3 -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())')"
    fi
fi

if [ "$refused" -gt 0 ]; then
    exit 1
fi
echo "secrets-check: every secret is set, not a placeholder, and long enough"
