"""`python -m ingest_api`: the ingest API under uvicorn, with the server's limits from the settings.

What `make up` (Procfile), the Docker image and the tests start. It passes uvicorn the address, the
workers, `API_LIMIT_CONCURRENCY` and `API_TIMEOUT_KEEP_ALIVE_SECONDS`, no access log, no WebSocket support
(the API has no WebSocket route), and its own HTTP protocol, `ingest_api.main.GuardedHttpToolsProtocol`,
which adds what uvicorn 0.54 lacks against slow and idle clients (a deadline for each request's head, a
bound on its size, a concurrency limit that idle connections do not fill). It also raises the process's
limit of open files to the hard limit, so that the connections the limit allows can be opened.
"""

from __future__ import annotations

import logging
import resource

import uvicorn

from ingest_api.main import MAX_HEAD_BYTES
from purchases.settings import Settings, get_settings

log = logging.getLogger("ingest_api")

# File descriptors a worker needs besides its clients' connections: the database pool, the broker, logs.
RESERVED_FILES = 256


def raise_open_files_limit(needed: int) -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit; return the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        wanted = hard if hard != resource.RLIM_INFINITY else max(soft, needed)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
            soft = wanted
        except (ValueError, OSError) as exc:
            log.warning("could not raise the open files limit from %d to %d: %s", soft, wanted, exc)
    if soft < needed:
        log.warning(
            "open files limit %d is under the %d that API_LIMIT_CONCURRENCY=%d connections need: "
            "raise `ulimit -n` or lower API_LIMIT_CONCURRENCY",
            soft,
            needed,
            needed - RESERVED_FILES,
        )
    return soft


def server_options(settings: Settings) -> dict:
    """uvicorn.run's options for these settings."""
    return dict(
        host=settings.api_host,
        port=settings.api_port,
        workers=settings.api_workers,
        http="ingest_api.main:GuardedHttpToolsProtocol",
        ws="none",
        limit_concurrency=settings.limit_concurrency,
        timeout_keep_alive=settings.timeout_keep_alive_seconds,
        h11_max_incomplete_event_size=MAX_HEAD_BYTES,
        access_log=False,
    )


def main() -> None:
    settings = get_settings()
    raise_open_files_limit(settings.limit_concurrency + RESERVED_FILES)
    uvicorn.run("ingest_api.main:app", **server_options(settings))


if __name__ == "__main__":
    main()
