"""Slow and abusive clients: thousands of idle connections and heads sent a byte a second do not stop the API
answering everyone else, and are closed (ingest_api.main.GuardedHttpToolsProtocol, started by
`python -m ingest_api` as `make up` and the image start it)."""

from __future__ import annotations

import asyncio
import resource
import socket
import threading
import time

import httpx
import pytest
from api_support import Api, free_port, sign_up

IDLE = 2500  # connections that never send a byte
TRICKLING = 50  # connections that send their request's head one byte a second
LIMIT = 1000  # API_LIMIT_CONCURRENCY: fewer than the idle connections
KEEP_ALIVE = 2  # API_TIMEOUT_KEEP_ALIVE_SECONDS: also the deadline for a request's head
PROMPT = 1.0  # seconds: what the other clients' answers must stay under meanwhile
GOOD = {"product_name": "Umbrella", "quantity": 1, "unit_price": "15.00"}


@pytest.fixture(scope="module")
def guarded(api):
    env = dict(api.env, API_LIMIT_CONCURRENCY=str(LIMIT), API_TIMEOUT_KEEP_ALIVE_SECONDS=str(KEEP_ALIVE))
    server = Api(free_port(), env, api.bootstrap)
    server.start()
    yield server
    server.stop()


def enough_open_files(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed:
        wanted = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    if resource.getrlimit(resource.RLIMIT_NOFILE)[0] < needed:
        pytest.skip(f"this test needs {needed} open files; the hard limit is {hard}")


class Attack:
    """The abusive clients, on an event loop in a thread of their own: IDLE connections that send nothing and
    TRICKLING ones sending a head a byte a second. Records when the server closed each, and what it answered."""

    def __init__(self, port: int):
        self.port = port
        self.opened = threading.Event()
        self.started = 0.0
        self.idle_closed: list[float] = []
        self.trickle_closed: list[float] = []
        self.answers: list[bytes] = []
        self.thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    async def _idle(self) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        try:
            await self._until_closed(reader, self.idle_closed)
        finally:
            writer.close()

    async def _trickle(self) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        closed = asyncio.ensure_future(self._until_closed(reader, self.trickle_closed))
        try:
            for byte in b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Padding: " + b"x" * 60 + b"\r\n\r\n":
                if closed.done():
                    break
                writer.write(bytes([byte]))
                await asyncio.sleep(1)
            await closed
        except OSError:
            pass
        finally:
            writer.close()

    async def _until_closed(self, reader: asyncio.StreamReader, into: list) -> None:
        try:
            data = await asyncio.wait_for(reader.read(1024), KEEP_ALIVE + 20)
        except (OSError, TimeoutError):
            data = None
        if data:
            self.answers.append(data)
        into.append(time.monotonic() - self.started)

    async def _run(self) -> None:
        self.started = time.monotonic()
        idle = []
        for _ in range(0, IDLE, 500):  # in waves, within the listen backlog
            idle += [asyncio.ensure_future(self._idle()) for _ in range(500)]
            await asyncio.sleep(0.05)
        trickling = [asyncio.ensure_future(self._trickle()) for _ in range(TRICKLING)]
        await asyncio.sleep(0.2)
        self.opened.set()
        await asyncio.gather(*idle, *trickling, return_exceptions=True)


def test_idle_and_trickling_connections_do_not_stop_the_api_answering_others(guarded):
    enough_open_files(IDLE + TRICKLING + 256)
    with httpx.Client(base_url=guarded.url, timeout=30) as client:
        customer = sign_up(client, "patient")
    attack = Attack(guarded.port)
    attack.thread.start()
    assert attack.opened.wait(30)
    opened_at = time.monotonic() - attack.started

    # Meanwhile: other clients, each on a new connection (which idle ones must not lock out) and on one kept.
    answers, took = [], []
    with httpx.Client(base_url=guarded.url, timeout=10) as kept:
        for _ in range(20):
            for call in (
                lambda: httpx.get(guarded.url + "/healthz", timeout=10),
                lambda: kept.post("/purchases", json=GOOD, headers=customer.headers),
            ):
                started = time.monotonic()
                answers.append(call().status_code)
                took.append(time.monotonic() - started)
            time.sleep(0.1)
    assert answers == [200, 202] * 20, answers  # never a 503 for the idle connections' sake
    assert max(took) < PROMPT, sorted(took)[-5:]

    attack.thread.join(KEEP_ALIVE + 25)
    assert not attack.thread.is_alive()
    # The server closed every one of them, by the head deadline at the latest, and answered none.
    assert len(attack.idle_closed) == IDLE and len(attack.trickle_closed) == TRICKLING
    assert max(attack.trickle_closed) < opened_at + KEEP_ALIVE + 1.5, max(attack.trickle_closed)
    assert max(attack.idle_closed) < opened_at + KEEP_ALIVE + 1.5, max(attack.idle_closed)
    assert attack.answers == []


def test_a_request_head_over_16_kib_is_refused(guarded):
    with socket.create_connection(("127.0.0.1", guarded.port), timeout=10) as raw:
        # All at once and no more: the server reads it all before it answers and closes (what it had not read
        # would make the close a reset, which may destroy the answer before the client reads it).
        raw.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n" + b"X-Padding: " + b"x" * 17_000 + b"\r\n")
        answer = raw.recv(1024)
    assert answer.startswith(b"HTTP/1.1 431 "), answer
    assert httpx.get(guarded.url + "/healthz").status_code == 200


def read_response(raw: socket.socket) -> bytes:
    """One whole response (head and Content-Length body) from a raw connection."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = raw.recv(4096)
        assert chunk, f"closed after {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")
    )
    while len(body) < length:
        body += raw.recv(4096)
    return head + b"\r\n\r\n" + body


def test_a_keep_alive_connection_serves_requests_until_idle_for_the_timeout(guarded):
    with socket.create_connection(("127.0.0.1", guarded.port), timeout=10) as raw:
        for _ in range(3):
            raw.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            assert read_response(raw).startswith(b"HTTP/1.1 200 ")
            time.sleep(KEEP_ALIVE / 2)
        started = time.monotonic()
        assert raw.recv(4096) == b""  # closed by the server
        assert KEEP_ALIVE / 2 - 0.5 < time.monotonic() - started < KEEP_ALIVE / 2 + 1.5
