"""The dbt docs and the Data Docs in the Airflow UI: a running `airflow api-server` (real subprocess, free port)
serves the pages the pipeline publishes to the warehouse (purchases/pages.py), through the plugin in plugins/,
to signed-in users only, with menu entries; it reads them as a role that can read the pages only."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psycopg
import pytest

from purchases import pages, transform
from purchases.processes import free_port, stop_process
from purchases.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def healthy(url: str) -> bool:
    try:
        return httpx.get(url + "/api/v2/monitor/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.fixture(scope="module")
def docs_generated(dbt_env) -> bytes:
    """The docs as the DAG's last task publishes them (the marts need not be built for the page to exist)."""
    if pages.read(dbt_env["dsn"], "dbt_docs", "index.html") is None:
        transform.generate_docs()
    return pages.read(dbt_env["dsn"], "dbt_docs", "index.html").content


# A small site as the gate publishes one (purchases.check.gate: an index, pages in folders, static assets).
DATA_DOCS = {
    "index.html": b'<html><a href="validations/suite/run%3A1%2B00/page.html">run</a>'
    b'<link href="./static/styles/site.css"></html>',
    "validations/suite/run:1+00/page.html": b"<html>a validation</html>",
    "static/styles/site.css": b"body { margin: 0 }",
}


@pytest.fixture(scope="module")
def data_docs_published(dbt_env):
    """Published as the gate publishes its Data Docs: as the gate's role."""
    gate = Settings(WAREHOUSE_DSN=dbt_env["dsn"]).dsn_as("gate")
    pages.publish(gate, "data_docs", DATA_DOCS)
    yield DATA_DOCS
    pages.publish(gate, "data_docs", {})


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
    assert page.content == docs_generated
    # Regenerated often: browsers revalidate, and an unchanged page costs a 304.
    assert page.headers["cache-control"] == "no-cache"
    again = httpx.get(
        airflow_api + "/dbt-docs/", headers={**sign_in(airflow_api), "If-None-Match": page.headers["etag"]}, timeout=30
    )
    assert again.status_code == 304 and again.content == b""


def test_the_api_server_serves_the_data_docs_site(data_docs_published, airflow_api):
    headers = sign_in(airflow_api)
    index = httpx.get(airflow_api + "/data-docs/", headers=headers, timeout=30)
    assert index.status_code == 200 and index.content == data_docs_published["index.html"]
    assert index.headers["content-type"] == "text/html; charset=utf-8"
    # The index's relative links, as a browser resolves them (URL-encoded, as Great Expectations writes them).
    validation = httpx.get(airflow_api + "/data-docs/validations/suite/run%3A1%2B00/page.html", headers=headers)
    assert validation.status_code == 200 and validation.text == "<html>a validation</html>"
    css = httpx.get(airflow_api + "/data-docs/static/styles/site.css", headers=headers)
    assert css.status_code == 200 and css.headers["content-type"] == "text/css; charset=utf-8"
    assert httpx.get(airflow_api + "/data-docs/validations/none.html", headers=headers).status_code == 404
    assert httpx.get(airflow_api + "/data-docs/", timeout=30).status_code == 401


def test_the_pages_are_read_as_a_role_that_can_read_the_pages_only(dbt_env):
    """purchases_pages (no login: the plugin signs in as the gate and works as it) reads both sites and
    nothing else; the gate writes only the Data Docs, dbt only the dbt docs."""
    settings = Settings(WAREHOUSE_DSN=dbt_env["dsn"])
    reader = pages.reader_dsn(settings.dsn_as("gate"))
    with psycopg.connect(reader, autocommit=True) as conn:
        assert conn.execute("select current_user").fetchone() == (pages.PAGES_ROLE,)
        conn.execute("select path from pages.dbt_docs union all select path from pages.data_docs")
    refused = [
        (reader, "insert into pages.data_docs (path, content, content_type, sha256) values ('x', '', 't', 's')"),
        (reader, "select * from staging.purchase_events limit 1"),
        (reader, "select * from app.customers limit 1"),
        (settings.dsn_as("gate"), "select * from pages.dbt_docs"),
        (settings.dsn_as("gate"), "delete from pages.dbt_docs"),
        (settings.dsn_as("dbt"), "delete from pages.data_docs"),
        (settings.dsn_as("api"), "select * from pages.data_docs"),
    ]
    for dsn, statement in refused:
        with psycopg.connect(dsn, autocommit=True) as conn, pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(statement)


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
        },
        {
            "name": "Data Docs",
            "href": "/data-docs/",
            "destination": "nav",
            "category": "Browse",
            "url_route": "data-docs",
            "icon": None,
            "icon_dark_mode": None,
            "nav_top_level": False,
        },
    ]
