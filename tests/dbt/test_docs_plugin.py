"""The dbt docs in the Airflow UI: a running `airflow api-server` (real subprocess, free port) serves the page
the pipeline generates, through the plugin in plugins/, to signed-in users only, with a menu entry."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from purchases import transform
from purchases.processes import free_port, stop_process

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def healthy(url: str) -> bool:
    try:
        return httpx.get(url + "/api/v2/monitor/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.fixture(scope="module")
def docs_generated(dbt_env):
    """The docs as the DAG's last task writes them (the marts need not be built for the page to exist)."""
    page = transform.docs_dir() / "index.html"
    if not page.exists():
        transform.generate_docs()
    return page


@pytest.fixture(scope="module")
def airflow_api(airflow_db, dbt_env, tmp_path_factory):
    port = free_port()
    home = tmp_path_factory.mktemp("api_server")
    (home / "passwords.json").write_text(json.dumps({"docs-reader": "docs-reader-password"}))
    env = dict(
        os.environ,
        AIRFLOW__API__HOST="127.0.0.1",
        AIRFLOW__API__PORT=str(port),
        AIRFLOW__API__BASE_URL=f"http://127.0.0.1:{port}",
        AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS="docs-reader:viewer",
        AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE=str(home / "passwords.json"),
        AIRFLOW__API_AUTH__JWT_SECRET="test-only-jwt-secret-for-the-dbt-docs-plugin-test",
    )
    log = open(home / "api-server.log", "ab")
    process = subprocess.Popen(
        [str(Path(sys.executable).parent / "airflow"), "api-server", "--host", "127.0.0.1", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while not healthy(url):
            assert process.poll() is None, f"api-server exited: {(home / 'api-server.log').read_text()[-3000:]}"
            assert time.monotonic() < deadline, "api-server not healthy after 180 s"
            time.sleep(0.5)
        yield url
    finally:
        stop_process(process, timeout=20)
        log.close()


def sign_in(url: str) -> dict:
    answer = httpx.post(url + "/auth/token", json={"username": "docs-reader", "password": "docs-reader-password"})
    assert answer.status_code in (200, 201), answer.text
    return {"Authorization": f"Bearer {answer.json()['access_token']}"}


def test_the_api_server_serves_the_dbt_docs_to_signed_in_users(docs_generated, airflow_api):
    page = httpx.get(airflow_api + "/dbt-docs/", headers=sign_in(airflow_api), timeout=30)

    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert 'ng-app="dbt"' in page.text  # the dbt docs single-page app
    # --static inlines the manifest and catalog: the page documents this project's marts and exposures.
    for node in (
        "model.purchases.customer_spend_daily",
        "model.purchases.spend_alerts",
        "exposure.purchases.grafana_purchases_dashboard",
    ):
        assert node in page.text
    assert page.text == docs_generated.read_text()


def test_the_dbt_docs_need_an_airflow_sign_in(docs_generated, airflow_api):
    assert httpx.get(airflow_api + "/dbt-docs/", timeout=30).status_code == 401
    assert httpx.get(airflow_api + "/dbt-docs/", cookies={"_token": "forged"}, timeout=30).status_code == 403


def test_the_ui_menu_has_a_dbt_docs_entry(airflow_api):
    plugins = httpx.get(airflow_api + "/api/v2/plugins", headers=sign_in(airflow_api), timeout=30).json()["plugins"]
    views = [view for plugin in plugins if plugin["name"] == "purchases_dbt_docs" for view in plugin["external_views"]]
    assert views == [
        {
            "name": "dbt docs",
            "href": "/dbt-docs/",
            "destination": "nav",
            "category": "Browse",
            "url_route": "dbt-docs",
            "icon": None,
            "icon_dark_mode": None,
            "nav_top_level": False,
        }
    ]
