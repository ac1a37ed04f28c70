"""The pages the Airflow UI serves, in the warehouse: reachable whichever machine's task wrote them.

* pages.dbt_docs: the dbt docs page (`dbt docs generate --static`: one index.html), written by the
  transform DAG's `regenerate_dbt_docs` task as dbt's role.
* pages.data_docs: the quality gate's Great Expectations Data Docs site (index.html, a page per validation,
  static assets), written by the gate's task as the gate's role.

One row per file of a site: its path inside the site (`index.html`, `static/styles/...`), the bytes, the
content type it is served with, the SHA-256 of the bytes (a writer skips what did not change; the page's
ETag) and when it last changed. purchases/pages.py writes and reads them; the Airflow api-server's plugin
(plugins/dbt_docs_plugin.py) serves them as the role purchases_pages, which can read them and nothing else
(purchases/sql/roles.sql). Before, the pages were files on the disk of whichever machine ran the task,
which the api-server of another machine (a Celery worker's) could not read.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-09
"""

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

UPGRADE = r"""
create schema if not exists pages;
create table if not exists pages.dbt_docs (
    path         text primary key check (path <> '' and left(path, 1) <> '/' and path !~ '(^|/)\.\.(/|$)'),
    content      bytea not null,
    content_type text not null,
    sha256       text not null,
    updated_at   timestamptz not null default clock_timestamp()
);
create table if not exists pages.data_docs (like pages.dbt_docs including all);
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute("drop table if exists pages.data_docs; drop table if exists pages.dbt_docs; drop schema if exists pages")
