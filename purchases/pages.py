"""Where the pages the Airflow UI serves live: in the warehouse, so that they are reachable whichever machine
wrote them (a Celery worker shares no disk with the api-server).

Two sites, one table each (migration 0004), one row per file (path inside the site -> bytes, content type,
SHA-256, updated_at):

| site        | table             | written by                                   | as the role      |
| ----------- | ----------------- | -------------------------------------------- | ---------------- |
| `dbt_docs`  | `pages.dbt_docs`  | purchases.transform.docs.generate_docs       | `purchases_dbt`  |
| `data_docs` | `pages.data_docs` | purchases.check.gate.run_quality_gate        | `purchases_gate` |

The api-server's plugin (plugins/dbt_docs_plugin.py) reads them as `purchases_pages`, a role that may read
these two tables and nothing else (purchases/sql/roles.sql). It has no login of its own: a login needs a
password, and a password is a setting of its own (purchases/settings.py, scripts/env.sh, .env, the compose
file). Until there is one the plugin signs in with the gate's connection, which the api-server has anyway,
and works as `purchases_pages` (`SET ROLE`, at connection start): see `reader_dsn`.

The writing task keeps a working copy of its site on its own machine (DBT_DOCS_DIR, GX_DATA_DOCS_DIR):
Great Expectations builds its site in a folder, and its index lists the validation pages it finds there.
`restore` brings that folder up to what the warehouse holds (pages other machines wrote) before a build,
`publish` makes the warehouse hold exactly the folder after it, in one transaction, so a reader sees the
old site or the new one, never half of each. Unchanged files (same SHA-256) are not written again.
"""

from __future__ import annotations

import hashlib
import mimetypes
import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import psycopg
from psycopg import sql

SITES = {"dbt_docs": "dbt_docs", "data_docs": "data_docs"}  # site -> its table in schema `pages`
PAGES_ROLE = "purchases_pages"  # reads the pages only (purchases/sql/roles.sql)
# Serialises writers of one site (a gate run and a cleared one, two docs tasks): publish reads, then writes.
_LOCK_BASE = 724320


@dataclass(frozen=True)
class Page:
    path: str
    content: bytes | None  # None when only the metadata was asked for
    content_type: str
    sha256: str
    updated_at: datetime


@dataclass(frozen=True)
class Published:
    written: int  # files new or changed
    deleted: int
    unchanged: int


def _table(site: str) -> sql.Composable:
    if site not in SITES:
        raise ValueError(f"unknown site {site!r}: one of {', '.join(SITES)}")
    return sql.Identifier("pages", SITES[site])


def _lock(conn: psycopg.Connection, site: str) -> None:
    conn.execute("select pg_advisory_xact_lock(%s)", (_LOCK_BASE + list(SITES).index(site),))


def content_type(path: str) -> str:
    guessed, _ = mimetypes.guess_type(path)
    if guessed is None:
        return "application/octet-stream"
    return f"{guessed}; charset=utf-8" if guessed.startswith("text/") or guessed.endswith(("+xml", "json")) else guessed


def sha256(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()


def _files(directory: Path) -> dict[str, Path]:
    """Every file under `directory` by its path relative to it (with /), hidden files left out (a partial
    file of replace_atomically)."""
    found = {}
    for path in directory.rglob("*"):
        relative = path.relative_to(directory)
        if path.is_file() and not any(part.startswith(".") for part in relative.parts):
            found[relative.as_posix()] = path
    return found


def publish(dsn: str, site: str, files: dict[str, bytes], *, replace: bool = True) -> Published:
    """Make the warehouse's copy of `site` hold `files` (path -> bytes): new and changed files written, and,
    with `replace`, files no longer there deleted. One transaction."""
    table = _table(site)
    written = unchanged = deleted = 0
    with psycopg.connect(dsn) as conn, conn.transaction():
        _lock(conn, site)
        stored = dict(conn.execute(sql.SQL("select path, sha256 from {}").format(table)).fetchall())
        upsert = sql.SQL(
            "insert into {} (path, content, content_type, sha256, updated_at) "
            "values (%s, %s, %s, %s, clock_timestamp()) "
            "on conflict (path) do update set content = excluded.content, content_type = excluded.content_type, "
            "sha256 = excluded.sha256, updated_at = excluded.updated_at"
        ).format(table)
        for path, content in files.items():
            digest = sha256(content)
            if stored.get(path) == digest:
                unchanged += 1
                continue
            conn.execute(upsert, (path, content, content_type(path), digest))
            written += 1
        if replace:
            gone = sorted(set(stored) - set(files))
            if gone:
                conn.execute(sql.SQL("delete from {} where path = any(%s)").format(table), (gone,))
            deleted = len(gone)
    return Published(written, deleted, unchanged)


def publish_directory(dsn: str, site: str, directory: Path) -> Published:
    """The warehouse's copy of `site` becomes exactly the files under `directory`."""
    return publish(dsn, site, {name: path.read_bytes() for name, path in _files(directory).items()})


def restore(dsn: str, site: str, directory: Path) -> int:
    """Bring the working copy `directory` up to the warehouse's copy of `site`: files missing or different
    are written (with the time they were published as their mtime), files the warehouse no longer holds are
    deleted. When the warehouse holds nothing of the site yet, the folder is left as it is (a site written
    before the pages lived in the warehouse is then published by the next `publish`). Returns the number of
    files written."""
    table = _table(site)
    local = _files(directory) if directory.exists() else {}
    with psycopg.connect(dsn, autocommit=True) as conn:
        stored = {
            path: (digest, updated)
            for path, digest, updated in conn.execute(sql.SQL("select path, sha256, updated_at from {}").format(table))
        }
        if not stored:
            return 0
        wanted = [
            path
            for path, (digest, _) in stored.items()
            if path not in local or sha256(local[path].read_bytes()) != digest
        ]
        written = 0
        if wanted:
            query = sql.SQL("select path, content, updated_at from {} where path = any(%s)").format(table)
            rows = conn.execute(query, (wanted,))
            for path, content, updated in rows:
                target = directory / path
                target.parent.mkdir(parents=True, exist_ok=True)
                partial = target.with_name(f".{target.name}.restoring")
                partial.write_bytes(content)
                os.replace(partial, target)
                os.utime(target, (updated.timestamp(), updated.timestamp()))
                written += 1
    for path in set(local) - set(stored):
        local[path].unlink(missing_ok=True)
    return written


def read(dsn: str, site: str, path: str, *, content: bool = True, unless: tuple[str, ...] = ()) -> Page | None:
    """One file of `site`, or None. Its content is left out (None) with content=False, or when its SHA-256
    is among `unless` (the ETags a browser already has)."""
    query = sql.SQL(
        "select path, case when %s and not sha256 = any(%s) then content end, content_type, sha256, updated_at "
        "from {} where path = %s"
    ).format(_table(site))
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(query, (content, list(unless), path)).fetchone()
    if row is None:
        return None
    return Page(row[0], bytes(row[1]) if row[1] is not None else None, *row[2:])


def updated_at(dsn: str, site: str, path: str = "index.html") -> datetime | None:
    page = read(dsn, site, path, content=False)
    return page.updated_at if page else None


def reader_dsn(dsn: str) -> str:
    """`dsn` (a login of a member of purchases_pages: the gate's) working as purchases_pages from the
    start of the connection: every statement has the privileges of a role that can read the pages only."""
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    options = conninfo_to_dict(dsn).get("options", "")
    return make_conninfo(dsn, options=f"{options} -c role={PAGES_ROLE}".strip())
