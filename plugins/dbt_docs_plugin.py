"""Airflow UI menu entries "dbt docs" and "Data Docs": the documentation and lineage of the purchases marts,
and the quality gate's Great Expectations validation results.

The api-server mounts two small FastAPI apps: /dbt-docs serves the page the `purchases_transform` DAG
regenerates in its last task (`dbt docs generate --static`: one self-contained index.html), /data-docs the
site the `purchases_quality` gate builds (an index, a page per validation, static assets). Both are read
from the warehouse (`pages.dbt_docs`, `pages.data_docs`: purchases/pages.py), where the tasks publish them,
so they are there whichever machine (a Celery worker) ran the task; the api-server reads them as
`purchases_pages`, a role that may read these pages and nothing else. The menu entries embed them in the UI
(Browse -> dbt docs, Browse -> Data Docs). Like the rest of the UI they need a signed-in Airflow user: the
browser's session cookie, or an API token as `Authorization: Bearer ...`.
"""

from __future__ import annotations

import html
from urllib.parse import urlsplit

from airflow.configuration import conf
from airflow.plugins_manager import AirflowPlugin
from fastapi import Depends, FastAPI, HTTPException, Request, Response, status
from fastapi.responses import HTMLResponse, RedirectResponse

URL_PREFIX = "/dbt-docs"
DATA_DOCS_PREFIX = "/data-docs"
# The UI may be served under a path (AIRFLOW__API__BASE_URL=https://host/airflow): links must include it.
BASE_PATH = urlsplit(conf.get("api", "base_url", fallback="") or "").path.rstrip("/")

NOT_GENERATED_YET = """<!doctype html><html><head><meta charset="utf-8"><title>{title}</title></head>
<body style="font-family: sans-serif; margin: 2em">
<h1>{title} are not generated yet</h1>
<p>{how}</p>
</body></html>"""
HOW = {
    "dbt_docs": "They are written by the last task of the <code>purchases_transform</code> DAG, or by "
    "<code>python -m purchases.transform docs</code>, into the warehouse (<code>pages.dbt_docs</code>).",
    "data_docs": "They are written by the <code>purchases_quality</code> DAG's gate whenever it checks new "
    "rows, into the warehouse (<code>pages.data_docs</code>).",
}
TITLES = {"dbt_docs": "dbt docs", "data_docs": "Data Docs"}


async def require_airflow_user(request: Request) -> None:
    """The api-server's own authentication: a valid Airflow JWT from the Authorization header or the
    UI's session cookie. Imported lazily: other Airflow components load plugins without the API's auth."""
    from airflow.api_fastapi.auth.managers.base_auth_manager import COOKIE_NAME_JWT_TOKEN
    from airflow.api_fastapi.core_api.security import resolve_user_from_token

    scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
    token = credentials if scheme.lower() == "bearer" and credentials else request.cookies.get(COOKIE_NAME_JWT_TOKEN)
    if not token:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "Sign in to Airflow to read the docs")
    await resolve_user_from_token(token)


def pages_dsn() -> str:
    """The warehouse as purchases_pages (read the pages only), through the gate's connection
    (AIRFLOW_CONN_WAREHOUSE_GATE): the reader has no login of its own (purchases/pages.py says why)."""
    from purchases.connections import GATE_CONN_ID, warehouse_dsn
    from purchases.pages import reader_dsn

    return reader_dsn(warehouse_dsn(GATE_CONN_ID))


def serve(site: str, path: str, request: Request) -> Response:
    """One file of a site, with its SHA-256 as ETag (regenerated often: browsers revalidate, and an
    unchanged page costs a 304 instead of megabytes)."""
    from purchases import pages

    known = tuple(tag.strip().strip('"') for tag in request.headers.get("if-none-match", "").split(",") if tag.strip())
    found = pages.read(pages_dsn(), site, path, unless=known)
    if found is None:
        if path == "index.html":
            body = NOT_GENERATED_YET.format(title=TITLES[site], how=HOW[site])
            return HTMLResponse(body, status_code=404)
        return HTMLResponse(f"<p>{html.escape(path)}: no such page</p>", status_code=404)
    headers = {"Cache-Control": "no-cache", "ETag": f'"{found.sha256}"'}
    if found.content is None:
        return Response(status_code=304, headers=headers)
    return Response(found.content, media_type=found.content_type, headers=headers)


def create_app() -> FastAPI:
    """The dbt docs: one page."""
    app = FastAPI(
        title="purchases dbt docs",
        dependencies=[Depends(require_airflow_user)],
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )

    @app.get("/", include_in_schema=False)
    def docs_page(request: Request):
        return serve("dbt_docs", "index.html", request)

    @app.get("/index.html", include_in_schema=False)
    def index_alias():
        return RedirectResponse(f"{BASE_PATH}{URL_PREFIX}/")

    return app


def create_data_docs_app() -> FastAPI:
    """The Data Docs: a site of pages that link each other by relative paths, so every path is served."""
    app = FastAPI(
        title="purchases Data Docs",
        dependencies=[Depends(require_airflow_user)],
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )

    @app.get("/", include_in_schema=False)
    def index(request: Request):
        return serve("data_docs", "index.html", request)

    @app.get("/{path:path}", include_in_schema=False)
    def page(path: str, request: Request):
        return serve("data_docs", path, request)

    return app


class PurchasesDbtDocsPlugin(AirflowPlugin):
    name = "purchases_dbt_docs"
    fastapi_apps = [
        {"name": "purchases_dbt_docs", "app": create_app(), "url_prefix": URL_PREFIX},
        {"name": "purchases_data_docs", "app": create_data_docs_app(), "url_prefix": DATA_DOCS_PREFIX},
    ]
    external_views = [
        {
            "name": "dbt docs",
            "href": f"{BASE_PATH}{URL_PREFIX}/",
            "destination": "nav",
            "category": "Browse",
            # Embedded in the UI at /plugin/dbt-docs (rather than opening a new tab).
            "url_route": "dbt-docs",
        },
        {
            "name": "Data Docs",
            "href": f"{BASE_PATH}{DATA_DOCS_PREFIX}/",
            "destination": "nav",
            "category": "Browse",
            "url_route": "data-docs",
        },
    ]
