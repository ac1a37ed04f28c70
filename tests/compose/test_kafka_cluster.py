"""docker-compose.kafka-cluster.yml, Kafka as three KRaft nodes over docker-compose.yml: checked without an engine.

`docker compose -f docker-compose.yml -f docker-compose.kafka-cluster.yml up -d` runs three combined
broker+controller nodes (`kafka`, `kafka-2`, `kafka-3`) with the topic replicated three ways and
min.insync.replicas 2, and points the API, Airflow and kafka-init at all three. Rendered with
`docker-compose config` like test_docker_compose.py (skipped without docker-compose, failed in CI); without
the override the stack keeps its single broker.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
import test_docker_compose as single
import yaml

ROOT = single.ROOT
OVERRIDE = ROOT / "docker-compose.kafka-cluster.yml"
BROKERS = ("kafka", "kafka-2", "kafka-3")
BOOTSTRAP = {f"{name}:9092" for name in BROKERS}
HOST_PORTS = {"kafka": "9094", "kafka-2": "9095", "kafka-3": "9096"}
HOST_PORT_SETTINGS = {"kafka": "KAFKA_HOST_PORT", "kafka-2": "KAFKA_2_HOST_PORT", "kafka-3": "KAFKA_3_HOST_PORT"}
DATA_DIR = "/var/lib/kafka/data"
# What the override may change in the services of docker-compose.yml, and nothing else.
CHANGED = {
    "kafka": {"environment", "volumes"},
    "kafka-init": {"command", "depends_on"},
    "ingest-api": {"environment"},
    **{name: {"environment"} for name in single.AIRFLOW_CONTAINERS},
}
CLIENT_SETTINGS = {"ingest-api": {"KAFKA_BOOTSTRAP_SERVERS"}} | {
    name: {"KAFKA_BOOTSTRAP_SERVERS", "AIRFLOW_CONN_KAFKA_DEFAULT"} for name in single.AIRFLOW_CONTAINERS
}


def run_cluster(*args: str, env_file: Path = single.ENV_EXAMPLE, extra_env: dict | None = None):
    """docker-compose with docker-compose.yml (run_compose's -f) and then the override: the later file wins."""
    return single.run_compose("-f", str(OVERRIDE), *args, env_file=env_file, extra_env=extra_env)


def render(result: subprocess.CompletedProcess) -> dict:
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)


@pytest.fixture(scope="module")
def cluster() -> dict:
    return render(run_cluster("config"))


@pytest.fixture(scope="module")
def default() -> dict:
    return render(single.run_compose("config"))


def env(config: dict, service: str) -> dict[str, str]:
    return {name: str(value) for name, value in config["services"][service]["environment"].items()}


def conditions_of(config: dict, name: str) -> dict[str, str]:
    return {dep: spec["condition"] for dep, spec in config["services"][name].get("depends_on", {}).items()}


def listeners(value: str) -> dict[str, tuple[str, str]]:
    """`NAME://host:port,...` as {NAME: (host, port)}."""
    found = {}
    for item in value.split(","):
        name, address = item.split("://")
        host, port = address.rsplit(":", 1)
        found[name] = (host, port)
    return found


def voters(value: str) -> dict[int, tuple[str, str]]:
    """controller.quorum.voters, `id@host:port,...`, as {id: (host, port)}."""
    found = {}
    for item in value.split(","):
        node, address = item.split("@")
        host, port = address.rsplit(":", 1)
        found[int(node)] = (host, port)
    return found


def servers(value: str) -> list[str]:
    return [s.strip() for s in value.split(",")]


def data_volumes(service: dict) -> list[tuple[str, str]]:
    """(source, target) of each volume, in docker-compose 1.29's or Compose v2's rendering."""
    mounts = []
    for volume in service.get("volumes", []):
        if isinstance(volume, dict):
            mounts.append((volume["source"], volume["target"]))
        else:
            source, target = str(volume).split(":")[:2]
            mounts.append((source, target))
    return mounts


def test_merged_config_is_valid(cluster):
    assert {*BROKERS, "kafka-init", "ingest-api", *single.AIRFLOW_SERVICES} <= set(cluster["services"])
    # With the celery profile too, and with the profile's worker.
    celery = render(run_cluster("config", extra_env={"COMPOSE_PROFILES": "celery"}))
    assert "airflow-worker" in celery["services"]
    assert celery["services"]["airflow-worker"]["profiles"] == ["celery"]


def test_three_kraft_nodes_with_their_own_ids_and_volumes_and_one_cluster_id(cluster, default):
    services = cluster["services"]
    nodes = {name: env(cluster, name) for name in BROKERS}
    assert [nodes[name]["KAFKA_NODE_ID"] for name in BROKERS] == ["1", "2", "3"]
    # The same image as the single broker (and kafka-init), the same cluster id, every node broker and controller.
    assert {services[name]["image"] for name in BROKERS} == {default["services"]["kafka"]["image"]}
    assert services["kafka-init"]["image"] == default["services"]["kafka"]["image"]
    assert {nodes[name]["CLUSTER_ID"] for name in BROKERS} == {env(default, "kafka")["CLUSTER_ID"]}
    for name, node in nodes.items():
        assert set(node["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}, name
        assert "zookeeper" not in json.dumps(node).lower(), name
    # Each node's log on a named volume of its own, none of them the single broker's.
    mounts = {name: data_volumes(services[name]) for name in BROKERS}
    for name, node in nodes.items():
        assert node["KAFKA_LOG_DIRS"] == DATA_DIR, name
        assert [target for _, target in mounts[name]] == [DATA_DIR], name
    sources = [source for name in BROKERS for source, _ in mounts[name]]
    assert len(set(sources)) == 3 and "kafka-data" not in sources
    assert set(sources) <= set(cluster["volumes"])


def test_a_quorum_of_three_controller_voters(cluster):
    nodes = {name: env(cluster, name) for name in BROKERS}
    (quorum,) = {node["KAFKA_CONTROLLER_QUORUM_VOTERS"] for node in nodes.values()}
    voter_set = voters(quorum)
    # One voter per node, by its node id and its service name (its host on the compose network), on the port
    # of its CONTROLLER listener.
    assert voter_set == {int(node["KAFKA_NODE_ID"]): (name, "9093") for name, node in nodes.items()}
    for name, node in nodes.items():
        assert node["KAFKA_CONTROLLER_LISTENER_NAMES"] == "CONTROLLER", name
        assert listeners(node["KAFKA_LISTENERS"])["CONTROLLER"] == ("", "9093"), name
    assert not any(cluster["services"][name].get("network_mode") for name in BROKERS)


def test_listeners_inside_the_compose_network_and_one_host_port_each(cluster):
    for name in BROKERS:
        node = env(cluster, name)
        bound = listeners(node["KAFKA_LISTENERS"])
        advertised = listeners(node["KAFKA_ADVERTISED_LISTENERS"])
        protocols = dict(item.split(":") for item in node["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(","))
        assert set(bound) == set(protocols) == {"PLAINTEXT", "CONTROLLER", "HOST"}, name
        # Brokers and the stack's clients: the service's name on the compose network.
        assert node["KAFKA_INTER_BROKER_LISTENER_NAME"] == "PLAINTEXT", name
        assert advertised["PLAINTEXT"] == (name, "9092") == (name, bound["PLAINTEXT"][1]), name
        # The host: localhost on the port this broker publishes (a client is sent to each broker's own).
        assert advertised["HOST"] == ("localhost", HOST_PORTS[name]), name
        assert "CONTROLLER" not in advertised, name
        (port,) = cluster["services"][name]["ports"]
        target = port["target"] if isinstance(port, dict) else str(port).split("/")[0].split(":")[-1]
        assert str(target) == bound["HOST"][1] == "9094", name


def test_ports_are_bound_to_localhost_by_default(cluster):
    ports = {name: single.published(service) for name, service in cluster["services"].items() if service.get("ports")}
    assert set(ports) == {*single.PUBLISHING, "kafka-2", "kafka-3"}
    for name in BROKERS:
        assert ports[name] == [("127.0.0.1", HOST_PORTS[name])], name
    every = [port for published in ports.values() for _, port in published]
    assert len(every) == len(set(every)), "each published port once"


def test_bind_address_and_host_ports_are_settable():
    moved = {"KAFKA_HOST_PORT": "19094", "KAFKA_2_HOST_PORT": "19095", "KAFKA_3_HOST_PORT": "19096"}
    services = render(run_cluster("config", extra_env={"BIND_ADDRESS": "0.0.0.0", **moved}))["services"]
    for name in BROKERS:
        port = moved[HOST_PORT_SETTINGS[name]]
        assert single.published(services[name]) == [("0.0.0.0", port)], name
        advertised = listeners(services[name]["environment"]["KAFKA_ADVERTISED_LISTENERS"])
        assert advertised["HOST"] == ("localhost", port), name


def test_replicated_three_ways_with_two_in_sync(cluster):
    for name in BROKERS:
        node = env(cluster, name)
        # The cluster's defaults, for any topic created without settings of its own and Kafka's internal ones.
        assert node["KAFKA_DEFAULT_REPLICATION_FACTOR"] == "3", name
        assert node["KAFKA_MIN_INSYNC_REPLICAS"] == "2", name
        assert node["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"] == "3", name
        assert node["KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR"] == "3", name
        assert node["KAFKA_TRANSACTION_STATE_LOG_MIN_ISR"] == "2", name
        assert node["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false", name
    # The topic itself, on all three brokers.
    command = " ".join(cluster["services"]["kafka-init"]["command"])
    assert "--create --if-not-exists" in command and "PURCHASES_TOPIC" in command
    assert re.search(r"--replication-factor 3\b", command)
    assert re.search(r"--config min\.insync\.replicas=2\b", command)
    (bootstrap,) = set(re.findall(r"--bootstrap-server (\S+)", command))
    assert set(servers(bootstrap)) == BOOTSTRAP
    assert env(cluster, "kafka-init") == {"PURCHASES_TOPIC": "purchases", "PURCHASES_PARTITIONS": "3"}


def kafka_init(cluster: dict, tmp_path: Path, described: str) -> tuple[subprocess.CompletedProcess, list[str]]:
    """kafka-init's script, run by bash with a kafka-topics.sh that answers --describe with `described`:
    its result and the arguments of each call."""
    calls = tmp_path / "calls"
    stub = tmp_path / "kafka-topics.sh"
    stub.write_text(
        "#!/bin/bash\n"
        f'printf "%s\\n" "$*" >> {calls}\n'
        'case " $* " in *" --describe "*) printf "%b\\n" "$DESCRIBED";; esac\n'
    )
    stub.chmod(0o755)
    entrypoint = cluster["services"]["kafka-init"]["entrypoint"]
    assert entrypoint in ("/bin/bash", ["/bin/bash"])
    flag, script = cluster["services"]["kafka-init"]["command"]
    # Compose turns $$ into $ when it runs the command.
    script = script.replace("$$", "$").replace("/opt/kafka/bin/kafka-topics.sh", str(stub))
    result = subprocess.run(
        ["bash", flag, script],
        env={"PATH": "/usr/bin:/bin", "DESCRIBED": described, **env(cluster, "kafka-init")},
        capture_output=True,
        text=True,
        timeout=30,
    )
    return result, calls.read_text().splitlines() if calls.exists() else []


# The header line of `kafka-topics.sh --describe`, its tabs as printf's \\t.
DESCRIBED = (
    "\\t".join(("Topic: purchases", "TopicId: 5lW0p1TbQ0a3sIvNxGxq2g", "PartitionCount: 3", "ReplicationFactor: {rf}"))
    + "\\tConfigs: {configs}"
)


def test_kafka_init_creates_the_topic_on_three_brokers_and_checks_it(cluster, tmp_path):
    result, calls = kafka_init(
        cluster, tmp_path, DESCRIBED.format(rf=3, configs="min.insync.replicas=2,segment.bytes=1073741824")
    )
    assert result.returncode == 0, result.stderr
    create, describe = calls
    assert create.split() == [
        "--bootstrap-server",
        "kafka:9092,kafka-2:9092,kafka-3:9092",
        "--create",
        "--if-not-exists",
        "--topic",
        "purchases",
        "--partitions",
        "3",
        "--replication-factor",
        "3",
        "--config",
        "min.insync.replicas=2",
    ]
    assert describe.split()[-3:] == ["--describe", "--topic", "purchases"]
    assert "ReplicationFactor: 3" in result.stdout, "the topic's description is in the log"


@pytest.mark.parametrize(
    ("rf", "configs"),
    [
        pytest.param(1, "min.insync.replicas=2", id="one-replica"),
        pytest.param(30, "min.insync.replicas=2", id="not-three"),
        pytest.param(3, "", id="min-isr-of-the-cluster"),
        pytest.param(3, "min.insync.replicas=1", id="min-isr-1"),
        pytest.param(3, "min.insync.replicas=20", id="min-isr-20"),
    ],
)
def test_kafka_init_refuses_a_topic_made_otherwise(cluster, tmp_path, rf, configs):
    # --if-not-exists keeps an existing topic (e.g. made with one replica): kafka-init fails, so nothing starts.
    result, _ = kafka_init(cluster, tmp_path, DESCRIBED.format(rf=rf, configs=configs))
    assert result.returncode != 0
    assert "not replicated 3 ways" in result.stderr


def test_every_kafka_client_names_all_three_brokers(cluster):
    from purchases.settings import Settings, exports

    for name, settings in CLIENT_SETTINGS.items():
        values = env(cluster, name)
        assert set(servers(values["KAFKA_BOOTSTRAP_SERVERS"])) == BOOTSTRAP, name
        if "AIRFLOW_CONN_KAFKA_DEFAULT" in settings:
            connection = json.loads(values["AIRFLOW_CONN_KAFKA_DEFAULT"])
            assert connection["conn_type"] == "kafka", name
            assert connection["extra"]["bootstrap.servers"] == values["KAFKA_BOOTSTRAP_SERVERS"], name
            # What scripts/env.sh derives from the same setting.
            derived = exports(Settings(KAFKA_BOOTSTRAP_SERVERS=values["KAFKA_BOOTSTRAP_SERVERS"]), {})
            assert connection == json.loads(derived["AIRFLOW_CONN_KAFKA_DEFAULT"]), name
    # Nothing else still points at the single broker alone.
    for name, service in cluster["services"].items():
        if name in BROKERS:
            continue
        for text in single.strings(service):
            if "kafka:9092" in text:
                assert all(server in text for server in BOOTSTRAP), (name, text)


def test_start_waits_for_every_broker(cluster):
    services = cluster["services"]

    def conditions(name: str) -> dict[str, str]:
        return conditions_of(cluster, name)

    first = {"secrets-check": "service_completed_successfully"}
    assert conditions("kafka-init") == {**first, **dict.fromkeys(BROKERS, "service_healthy")}
    for name in BROKERS:
        # Started together (the quorum needs two of them), each after the secrets check, each with a check.
        assert conditions(name) == first, name
        assert services[name]["healthcheck"]["test"], name
        assert "--bootstrap-server localhost:9092" in " ".join(services[name]["healthcheck"]["test"]), name
        assert services[name]["restart"] == "unless-stopped", name
    assert services["kafka-init"]["restart"] == "no"
    for name in ("ingest-api", *single.AIRFLOW_SERVICES):
        assert conditions(name)["kafka-init"] == "service_completed_successfully", name
    for name in services:
        if name != "secrets-check":
            assert conditions(name).get("secrets-check") == "service_completed_successfully", name
        for dep, condition in conditions(name).items():
            assert dep in services, (name, dep)
            if condition == "service_healthy":
                assert services[dep].get("healthcheck", {}).get("test"), f"{name} waits for {dep} to be healthy"


def unordered(service: dict, key: str):
    """A service's setting; volumes and ports in any order (docker-compose reorders them when it merges files)."""
    value = service.get(key)
    return sorted(map(json.dumps, value)) if key in ("volumes", "ports") and value else value


def test_the_override_changes_only_kafka_and_its_clients(cluster, default):
    services, before = cluster["services"], default["services"]
    assert set(services) - set(before) == {"kafka-2", "kafka-3"}
    assert set(cluster["volumes"]) - set(default["volumes"]) == {"kafka-1-data", "kafka-2-data", "kafka-3-data"}
    for name, spec in before.items():
        after = services[name]
        changed = {key for key in set(spec) | set(after) if unordered(spec, key) != unordered(after, key)}
        assert changed <= CHANGED.get(name, set()), (name, changed)
    for name, settings in CLIENT_SETTINGS.items():
        old, new = env(default, name), env(cluster, name)
        assert {key for key in set(old) | set(new) if old.get(key) != new.get(key)} == settings, name


def test_brokers_hold_no_secrets(tmp_path):
    values = single.good_secrets()
    lines = [
        f"{m.group(1)}={values[m.group(1)]}" if (m := single.ENV_LINE.match(line)) and m.group(1) in values else line
        for line in single.ENV_EXAMPLE.read_text().splitlines()
    ]
    good_env = tmp_path / "env"
    good_env.write_text("\n".join(lines) + "\n")
    services = render(run_cluster("config", env_file=good_env, extra_env={"COMPOSE_PROFILES": "celery"}))["services"]
    for name, value in values.items():
        holders = {service for service, spec in services.items() if any(value in s for s in single.strings(spec))}
        assert holders == single.HOLDERS[name] | {"secrets-check"}, name


def test_the_default_stack_keeps_its_single_broker(default):
    services = default["services"]
    assert not {"kafka-2", "kafka-3"} & set(services)
    assert [name for name, s in services.items() if s.get("image", "").startswith("apache/kafka:")] == [
        "kafka",
        "kafka-init",
    ]
    kafka = env(default, "kafka")
    assert kafka["KAFKA_NODE_ID"] == "1"
    assert voters(kafka["KAFKA_CONTROLLER_QUORUM_VOTERS"]) == {1: ("kafka", "9093")}
    assert kafka["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"] == "1"
    assert "KAFKA_MIN_INSYNC_REPLICAS" not in kafka
    assert data_volumes(services["kafka"]) == [("kafka-data", DATA_DIR)]
    assert not {"kafka-1-data", "kafka-2-data", "kafka-3-data"} & set(default["volumes"])
    command = " ".join(services["kafka-init"]["command"])
    assert "--replication-factor 1" in command and "min.insync.replicas" not in command
    assert set(re.findall(r"--bootstrap-server (\S+)", command)) == {"kafka:9092"}
    assert conditions_of(default, "kafka-init") == {
        "secrets-check": "service_completed_successfully",
        "kafka": "service_healthy",
    }
    for name in CLIENT_SETTINGS:
        assert env(default, name)["KAFKA_BOOTSTRAP_SERVERS"] == "kafka:9092", name
    assert single.published(services["kafka"]) == [("127.0.0.1", "9094")]
