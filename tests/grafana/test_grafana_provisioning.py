"""The provisioning files parse and have the shape Grafana's provisioning reads (no Grafana binary here)."""

from __future__ import annotations

import importlib.util
import json
import re
from datetime import UTC
from pathlib import Path

import pytest
import yaml
from grafana_eval import ALL, Variable, render_query

ROOT = Path(__file__).resolve().parents[2]
PROVISIONING = ROOT / "grafana" / "provisioning"
COMPOSE = ROOT / "docker-compose.yml"
DATASOURCE_TYPES = {"grafana-postgresql-datasource", "postgres"}
EXPRESSION_UID = "__expr__"
ENV_REFERENCE = re.compile(r"\$\{(\w+)\}|\$(\w+)")


def provisioning_files(kind: str) -> list[Path]:
    return sorted(p for p in (PROVISIONING / kind).iterdir() if p.suffix in (".yaml", ".yml", ".json"))


def load(path: Path):
    return json.loads(path.read_text()) if path.suffix == ".json" else yaml.safe_load(path.read_text())


def provider_files(kind: str) -> list[dict]:
    """The provisioning YAML files of `kind` (dashboards/ also holds the dashboard JSON itself)."""
    return [load(p) for p in provisioning_files(kind) if p.suffix != ".json"]


@pytest.fixture(scope="module")
def datasources() -> list[dict]:
    return [ds for f in provider_files("datasources") for ds in f["datasources"]]


@pytest.fixture(scope="module")
def rule_groups() -> list[dict]:
    return [g for f in provider_files("alerting") for g in f.get("groups", [])]


@pytest.fixture(scope="module")
def contact_points() -> list[dict]:
    return [cp for f in provider_files("alerting") for cp in f.get("contactPoints", [])]


@pytest.fixture(scope="module")
def policies() -> list[dict]:
    return [p for f in provider_files("alerting") for p in f.get("policies", [])]


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def test_every_provisioning_file_parses_with_api_version_1():
    files = [p for kind in ("datasources", "dashboards", "alerting") for p in provisioning_files(kind)]
    assert len(files) >= 5
    for path in files:
        content = load(path)
        assert isinstance(content, dict), path
        if path.suffix != ".json":
            assert content.get("apiVersion") == 1, f"{path}: apiVersion 1"


def test_warehouse_datasource_logs_in_as_the_read_only_role(datasources):
    (warehouse,) = [ds for ds in datasources if ds["uid"] == "warehouse"]
    assert warehouse["type"] in DATASOURCE_TYPES
    assert warehouse["user"] == "grafana_reader"
    assert warehouse["secureJsonData"]["password"] == "${GRAFANA_READER_PASSWORD}"
    assert warehouse["jsonData"]["database"] == "${WAREHOUSE_DB}"
    assert re.fullmatch(r"\$\{\w+\}:\$\{\w+\}", warehouse["url"]), "host:port from the environment"
    assert "password" not in warehouse and "password" not in warehouse["jsonData"], "only in secureJsonData"


def test_dashboard_provider_points_at_the_mounted_dashboards(compose):
    (provider,) = [p for f in provider_files("dashboards") for p in f["providers"]]
    assert provider["type"] == "file"
    path = provider["options"]["path"]
    # The compose file mounts grafana/provisioning at /etc/grafana/provisioning: the path must land on
    # the folder that holds the dashboard JSON.
    mounts = dict(
        v.rsplit(":", 2)[:2] if v.count(":") == 2 else v.split(":") for v in compose["services"]["grafana"]["volumes"]
    )
    container_root = mounts["./grafana/provisioning"]
    assert path.startswith(container_root + "/")
    local = PROVISIONING / path.removeprefix(container_root + "/")
    assert (local / "customer-spend.json").exists()


def test_dashboard_json_is_what_the_generator_builds(dashboard):
    spec = importlib.util.spec_from_file_location("build_dashboards", ROOT / "grafana" / "build_dashboards.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.build() == dashboard, "run .venv/bin/python grafana/build_dashboards.py and commit the JSON"


def test_dashboard_shape(dashboard, datasources):
    assert dashboard["uid"] and dashboard["title"] == "Customer spend"
    assert "id" not in dashboard or dashboard["id"] is None, "provisioned dashboards carry no database id"
    datasource_uids = {ds["uid"] for ds in datasources}
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids)), "panel ids are unique"
    occupied = set()
    for panel in dashboard["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, f"{panel['title']} fits the 24-column grid"
        cells = {
            (x, y) for x in range(grid["x"], grid["x"] + grid["w"]) for y in range(grid["y"], grid["y"] + grid["h"])
        }
        assert not cells & occupied, f"{panel['title']} overlaps another panel"
        occupied |= cells
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] in datasource_uids
            assert target["datasource"]["type"] in DATASOURCE_TYPES
            assert target["format"] in ("table", "time_series")
            assert target["rawQuery"] is True and target["rawSql"].strip()
            assert "marts." in target["rawSql"] and not re.search(r"\b(app|staging)\.", target["rawSql"]), (
                "panels read schema marts only"
            )


def test_dashboard_has_the_requested_panels(dashboard):
    titles = " | ".join(p["title"] for p in dashboard["panels"])
    for wanted in (
        "Top customers by spend",
        "Spend per day by currency",
        "Purchases per minute",
        "Pipeline freshness",
        "Rejected events, last hour",
        "Partition lag",
    ):
        assert wanted in titles


def test_dashboard_variables(dashboard):
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    for name in ("customer", "currency"):
        variable = variables[name]
        assert variable["type"] == "query" and variable["multi"] and variable["includeAll"]
        # A custom all value is inserted unescaped: it must be a complete SQL literal.
        assert variable["allValue"] == "'__all'"
        assert variable["datasource"]["uid"] == "warehouse"
    used = set()
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            used |= set(re.findall(r"\$(?!__)(\w+)", target["rawSql"]))
    assert used <= set(variables), f"queries use undefined variables {used - set(variables)}"


def test_variables_render_as_grafana_substitutes_them(dashboard):
    definitions = {v["name"]: v for v in dashboard["templating"]["list"]}
    customer = Variable.from_dashboard(definitions["customer"], ["a", "b'c"])
    assert customer.format(ALL) == "'__all'"
    assert customer.format(["a", "b'c"]) == "'a','b''c'"
    assert customer.format("a") == "'a'"
    top_n = Variable.from_dashboard(definitions["top_n"])
    assert top_n.format("10") == "10"


def test_every_panel_query_renders_completely(dashboard):
    """No variable or macro is left for Postgres to choke on (the query tests run them too)."""
    from datetime import datetime, timedelta

    now = datetime(2026, 1, 2, 3, 4, 5, 123000, tzinfo=UTC)
    variables = {v["name"]: Variable.from_dashboard(v, ["x"]) for v in dashboard["templating"]["list"]}
    selection = {"customer": ALL, "currency": ["USD"], "top_n": "10"}
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            text = render_query(target["rawSql"], now - timedelta(hours=1), now, variables, selection)
            assert "'2026-01-02T02:04:05.123Z'" in text or "$__time" not in target["rawSql"]


def test_alert_rules_shape(rule_groups, dashboard, datasources):
    datasource_uids = {ds["uid"] for ds in datasources}
    panel_ids = {p["id"] for p in dashboard["panels"]}
    uids = []
    for group in rule_groups:
        assert group["name"] and group["folder"] and re.fullmatch(r"\d+[smh]", group["interval"])
        for rule in group["rules"]:
            uids.append(rule["uid"])
            assert re.fullmatch(r"[a-zA-Z0-9_-]{1,40}", rule["uid"]), "Grafana's uid limits"
            assert rule["title"]
            refs = [d["refId"] for d in rule["data"]]
            assert len(refs) == len(set(refs))
            assert rule["condition"] in refs
            assert rule["noDataState"] in ("NoData", "Alerting", "OK", "KeepLast")
            assert rule["execErrState"] in ("Error", "Alerting", "OK", "KeepLast")
            assert re.fullmatch(r"\d+[smh]", rule["for"])
            assert rule["dashboardUid"] == dashboard["uid"] and rule["panelId"] in panel_ids
            # Grafana expands $VAR in labels: none may hold a '$'; annotations only expand ${VAR}.
            assert not any("$" in v for v in rule["labels"].values())
            assert not any("${" in v for v in rule["annotations"].values())
            for query in rule["data"]:
                model = query["model"]
                assert model["refId"] == query["refId"]
                if query["datasourceUid"] == EXPRESSION_UID:
                    assert model["type"] in ("math", "threshold", "reduce", "classic_conditions")
                    referenced = set(re.findall(r"\$\{?(\w+)", model["expression"])) or {model["expression"]}
                    assert referenced <= set(refs), f"{rule['uid']}: {model['expression']} references {refs}"
                else:
                    assert query["datasourceUid"] in datasource_uids
                    assert model["datasource"]["uid"] == query["datasourceUid"]
                    assert model["format"] == "table", "one alert instance per row"
                    assert model["rawSql"].strip() and "marts." in model["rawSql"]
                    assert query["relativeTimeRange"]["from"] > query["relativeTimeRange"]["to"] >= 0
    assert len(uids) == len(set(uids))
    assert {"purchases-spend-over-threshold", "purchases-pipeline-stale", "purchases-partition-stuck"} <= set(uids)


def test_webhook_contact_point_takes_its_url_from_the_environment(contact_points):
    receivers = [r for cp in contact_points for r in cp["receivers"]]
    webhooks = [r for r in receivers if r["type"] == "webhook"]
    assert webhooks and all(r["uid"] for r in receivers)
    assert webhooks[0]["settings"]["url"] == "${GRAFANA_ALERT_WEBHOOK_URL}"


def test_notification_policy_routes_to_existing_contact_points(policies, contact_points, rule_groups):
    names = {cp["name"] for cp in contact_points}
    labels = {(k, v) for g in rule_groups for r in g["rules"] for k, v in r["labels"].items()}
    (root,) = policies
    assert root["receiver"] in names
    for route in root.get("routes", []):
        assert route["receiver"] in names
        for name, op, value in route["object_matchers"]:
            assert op == "=" and (name, value) in labels, f"route matcher {name}={value} matches no rule"


def test_grafana_gets_every_variable_its_provisioning_reads(compose):
    referenced = set()
    for path in PROVISIONING.rglob("*.yaml"):
        for line in path.read_text().splitlines():
            if line.lstrip().startswith("#"):
                continue
            # Only ${VAR}: $labels, $values and $A are alert templates and expressions.
            referenced |= {braced for braced, _ in ENV_REFERENCE.findall(line) if braced}
    environment = compose["services"]["grafana"]["environment"]
    assert referenced and referenced <= set(environment), f"missing in compose: {referenced - set(environment)}"
