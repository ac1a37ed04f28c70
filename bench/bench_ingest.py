"""Ingest API throughput: authenticated, validated, broker-acknowledged POST /purchases against a bare FastAPI
endpoint that only answers 202, both served the same way and measured in the same run.

Everything runs on its own: an embedded broker on a free port, a scratch warehouse database (dropped at the
end), both servers under uvicorn with the same worker count (API_WORKERS, default 1, as `make up`), loaded by
the same tool (wrk, 1 thread) with the same request (same body, same bearer token) at 32 connections.

1. Single purchases: after a warm-up, BENCH_INGEST_ROUNDS rounds (default 5) of BENCH_INGEST_SECONDS (default
   8) each, alternating bare and real, so that a neighbour's CPU load hits both alike. Figure ingest_rps:
   median req/s of the real API's rounds; baseline: the bare endpoint's; ratio; p99_ms (median of the
   rounds'). Goals: ratio >= 0.4, p99 <= 25 ms. Every answer must be a 202.
2. Batches: POST /purchases/batch with 1000 purchases per request at BENCH_INGEST_BATCH_CONNECTIONS (default
   4) connections, BENCH_INGEST_BATCH_ROUNDS rounds (default 3), alternating likewise. Figure
   ingest_batch_purchases_per_s: median purchases/s; baseline: the bare endpoint receiving the same bodies.
   Goal >= 50,000 purchases/s.
3. The session revocation check (a token issued before its customer's password change is refused; every
   worker keeps customer -> "issued before this is revoked" in memory). Figure token_check_ns: in-process,
   ns per TokenCodec.customer_of of a remembered token (what every buy pays) with REVOCATIONS customers in the
   map; baseline: the same with an empty map; also the dict lookup alone. The API of 1. and 2. runs with
   REVOCATIONS password changes in its map too (customers changed 2 minutes before it started).
4. A login flood (bench/login_flood.py): FLOOD_CONNECTIONS connections of wrong-password logins with random
   usernames for FLOOD_SECONDS beside one signed-in customer reading and buying. Figure
   login_flood_read_p95_ms: the customer's read p95 during the flood; baseline: just before it; with the
   buys' figures and what the logins were answered.

The machine is shared (2 cores): load_average_1m is recorded with each figure, and every round is kept.

Run: make bench-ingest (or python -m bench.bench_ingest). Needs wrk (apt-get install -y wrk).
"""

from __future__ import annotations

from fastapi import FastAPI, Response

# The bare endpoint the API is compared with: same framework and server, nothing but the 202.
bare_app = FastAPI()


@bare_app.post("/purchases", status_code=202)
@bare_app.post("/purchases/batch", status_code=202)
async def bare_accept() -> Response:
    return Response(b'{"status":"accepted"}', status_code=202, media_type="application/json")


@bare_app.get("/healthz")
async def bare_health() -> dict:
    return {"status": "ok"}


REVOCATIONS = 10_000


def token_check_cost(calls: int = 200_000, repeat: int = 5) -> dict:
    """ns per check of a remembered token, best of `repeat` runs of `calls`: the map empty, holding
    REVOCATIONS other customers, holding the token's own customer too (changed before it was issued, so
    the check passes after comparing), and the lookup alone."""
    import time
    import uuid

    from ingest_api.core.security import TokenCodec

    def ns_per(call) -> float:
        best = float("inf")
        for _ in range(repeat):
            started = time.perf_counter()
            for _ in range(calls):
                call()
            best = min(best, (time.perf_counter() - started) / calls)
        return round(best * 1e9, 1)

    codec = TokenCodec("bench-secret-bench-secret-bench-secret", 3600)
    customer = uuid.uuid4()
    token = codec.issue(customer)
    codec.customer_of(token)  # remembered from now on, as after a client's first request
    empty = ns_per(lambda: codec.customer_of(token))
    now = time.time()
    for _ in range(REVOCATIONS):
        codec.revoke_issued_before(uuid.uuid4(), now)
    others = ns_per(lambda: codec.customer_of(token))
    codec.revoke_issued_before(customer, now - 60)
    own = ns_per(lambda: codec.customer_of(token))
    revoked = codec._revoked_before
    lookup = ns_per(lambda: revoked.get(customer))
    return {"empty_map_ns": empty, "others_in_map_ns": others, "own_in_map_ns": own, "lookup_alone_ns": lookup}


FLOOD_CONNECTIONS = 400
FLOOD_SECONDS = 15.0


def main() -> None:  # noqa: C901 - one straight script
    import json
    import os
    import secrets
    import shutil
    import statistics
    import subprocess
    import sys
    import tempfile
    import time
    from pathlib import Path

    import httpx
    import psycopg
    from psycopg.conninfo import make_conninfo

    from bench.results import record
    from purchases.broker import ensure_topic, start_embedded_broker
    from purchases.processes import free_port, stop_process
    from purchases.roles import setup_warehouse
    from purchases.warehouse import drop_database

    root = Path(__file__).resolve().parents[1]
    workers = int(os.environ.get("API_WORKERS", "1"))
    connections = int(os.environ.get("BENCH_INGEST_CONNECTIONS", "32"))
    rounds = int(os.environ.get("BENCH_INGEST_ROUNDS", "5"))
    seconds = int(os.environ.get("BENCH_INGEST_SECONDS", "8"))
    batch_rounds = int(os.environ.get("BENCH_INGEST_BATCH_ROUNDS", "3"))
    batch_connections = int(os.environ.get("BENCH_INGEST_BATCH_CONNECTIONS", "4"))
    batch_size = 1000
    wrk = shutil.which("wrk")
    if wrk is None:
        sys.exit("wrk is needed: apt-get install -y wrk")

    def wait_healthy(url: str, process: subprocess.Popen, what: str) -> None:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if process.poll() is not None:
                sys.exit(f"{what} exited with {process.returncode}; see its log")
            try:
                if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        sys.exit(f"{what} did not become healthy")

    work = Path(tempfile.mkdtemp(prefix="bench_ingest_"))
    log_dir = root / "logs"
    log_dir.mkdir(exist_ok=True)
    processes: list[subprocess.Popen] = []
    broker_port = free_port()
    bootstrap_servers = f"127.0.0.1:{broker_port}"
    dsn = make_conninfo(
        os.environ.get("WAREHOUSE_DSN", "postgresql://postgres@127.0.0.1:5432/purchases"),
        dbname=f"purchases_bench_ingest_{secrets.token_hex(4)}",
    )

    def serve(app: str, port: int, env: dict, name: str) -> subprocess.Popen:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                app,
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--workers",
                str(workers),
                "--no-access-log",
                "--log-level",
                "warning",
            ],
            cwd=root,
            env=env,
            stdout=open(log_dir / f"bench_ingest_{name}.log", "wb"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        processes.append(process)
        return process

    report_lua = """
done = function(summary, latency, requests)
  io.write(string.format("RESULT %d %d %.3f %.3f %.3f %.3f %d %d\\n", summary.requests, summary.duration,
    latency:percentile(50) / 1000, latency:percentile(90) / 1000, latency:percentile(99) / 1000,
    latency.max / 1000, summary.errors.status, summary.errors.connect + summary.errors.read +
    summary.errors.write + summary.errors.timeout))
end
"""

    def lua_script(name: str, body: bytes, token: str) -> Path:
        body_file = work / f"{name}.json"
        body_file.write_bytes(body)
        script = work / f"{name}.lua"
        script.write_text(
            f"""
local f = io.open("{body_file}", "rb")
wrk.body = f:read("*a")
f:close()
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer {token}"
"""
            + report_lua
        )
        return script

    def run_wrk(url: str, script: Path, duration: int, conns: int) -> dict:
        out = subprocess.run(
            [wrk, "-t1", f"-c{conns}", f"-d{duration}s", "--timeout", "10s", "-s", str(script), url],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        line = next(line for line in out.splitlines() if line.startswith("RESULT "))
        requests, duration_us, p50, p90, p99, worst, bad_status, socket_errors = line.split()[1:]
        return {
            "rps": int(requests) / (int(duration_us) / 1e6),
            "requests": int(requests),
            "p50_ms": float(p50),
            "p90_ms": float(p90),
            "p99_ms": float(p99),
            "max_ms": float(worst),
            "non_202": int(bad_status),
            "socket_errors": int(socket_errors),
        }

    check = token_check_cost()
    record(
        "token_check_ns",
        check["others_in_map_ns"],
        "ns",
        check["empty_map_ns"],
        higher_is_better=False,
        revocations_in_map=REVOCATIONS,
        calls=200_000,
        baseline_is="the same remembered-token check with an empty revocation map",
        **check,
        load_average_1m=round(os.getloadavg()[0], 2),
    )

    try:
        broker = start_embedded_broker("127.0.0.1", broker_port, log_dir / "bench_ingest_broker.log")
        processes.append(broker)
        deadline = time.monotonic() + 60
        while True:
            try:
                ensure_topic(bootstrap_servers, "purchases", 3, timeout=5)
                break
            except Exception:  # noqa: BLE001 - the broker is starting
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
        setup_warehouse(dsn)
        # Each worker's revocation map holds REVOCATIONS customers while the rounds run (loaded by its first
        # refresh; 2 minutes old, so that later refreshes, which re-read the last minute, skip them).
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(
                """insert into app.customers (customer_id, username, password_hash, password_changed_at)
                   select gen_random_uuid(), 'revoked_' || i, 'x', now() - interval '2 minutes'
                   from generate_series(1, %s) as i""",
                (REVOCATIONS,),
            )
        env = dict(
            os.environ,
            WAREHOUSE_DSN=dsn,
            KAFKA_BOOTSTRAP_SERVERS=bootstrap_servers,
            PURCHASES_TOPIC="purchases",
            JWT_SECRET=os.environ.get("JWT_SECRET") or secrets.token_urlsafe(32),
        )
        api_url, bare_url = f"http://127.0.0.1:{free_port()}", f"http://127.0.0.1:{free_port()}"
        api = serve("ingest_api.main:app", int(api_url.rsplit(":", 1)[1]), env, "api")
        bare = serve("bench.bench_ingest:bare_app", int(bare_url.rsplit(":", 1)[1]), env, "bare")
        wait_healthy(api_url, api, "the ingest API")
        wait_healthy(bare_url, bare, "the bare endpoint")

        username, password = f"bench_{secrets.token_hex(4)}", secrets.token_urlsafe(16)
        assert (
            httpx.post(
                api_url + "/customers", json={"username": username, "password": password}, timeout=30
            ).status_code
            == 201
        )
        token = httpx.post(
            api_url + "/auth/token", data={"username": username, "password": password}, timeout=30
        ).json()["access_token"]
        purchase = {
            "product_name": "Coffee beans",
            "description": "1 kg, whole",
            "quantity": 2,
            "unit_price": "12.35",
            "currency": "USD",
        }
        single = lua_script("single", json.dumps(purchase).encode(), token)
        batch = lua_script(
            "batch",
            json.dumps(
                {"purchases": [dict(purchase, product_name=f"Coffee beans {i}") for i in range(batch_size)]}
            ).encode(),
            token,
        )

        # Warm-up: connections, the producer's id, the JIT-less interpreter's caches.
        run_wrk(api_url + "/purchases", single, 3, connections)
        run_wrk(bare_url + "/purchases", single, 3, connections)

        real_rounds, bare_rounds = [], []
        for i in range(rounds):
            bare_rounds.append(run_wrk(bare_url + "/purchases", single, seconds, connections))
            real_rounds.append(run_wrk(api_url + "/purchases", single, seconds, connections))
            print(
                f"round {i + 1}/{rounds}: bare {bare_rounds[-1]['rps']:.0f} req/s p99 "
                f"{bare_rounds[-1]['p99_ms']:.1f} ms | api {real_rounds[-1]['rps']:.0f} req/s p99 "
                f"{real_rounds[-1]['p99_ms']:.1f} ms",
                flush=True,
            )
        failures = sum(r["non_202"] + r["socket_errors"] for r in real_rounds)

        def median(rows: list[dict], key: str) -> float:
            return round(statistics.median(row[key] for row in rows), 2)

        machine_load = os.getloadavg()[0]
        record(
            "ingest_rps",
            round(median(real_rounds, "rps")),
            "req/s",
            round(median(bare_rounds, "rps")),
            p99_ms=median(real_rounds, "p99_ms"),
            p50_ms=median(real_rounds, "p50_ms"),
            p90_ms=median(real_rounds, "p90_ms"),
            baseline_p99_ms=median(bare_rounds, "p99_ms"),
            goal_ratio=0.4,
            goal_p99_ms=25,
            connections=connections,
            uvicorn_workers=workers,
            rounds=rounds,
            seconds_per_round=seconds,
            load_tool="wrk -t1",
            revocations_in_map=REVOCATIONS,
            failed_requests=failures,
            requests=sum(r["requests"] for r in real_rounds),
            load_average_1m=round(machine_load, 2),
            baseline_is="bare FastAPI endpoint answering 202, same uvicorn, workers, wrk, body, token",
            rounds_detail={"api": real_rounds, "bare": bare_rounds},
        )

        run_wrk(api_url + "/purchases/batch", batch, 2, batch_connections)  # warm-up
        real_batches, bare_batches = [], []
        for i in range(batch_rounds):
            bare_batches.append(run_wrk(bare_url + "/purchases/batch", batch, seconds, batch_connections))
            real_batches.append(run_wrk(api_url + "/purchases/batch", batch, seconds, batch_connections))
            print(
                f"batch round {i + 1}/{batch_rounds}: bare {bare_batches[-1]['rps'] * batch_size:.0f} "
                f"purchases/s | api {real_batches[-1]['rps'] * batch_size:.0f} purchases/s",
                flush=True,
            )
        batch_failures = sum(r["non_202"] + r["socket_errors"] for r in real_batches)
        record(
            "ingest_batch_purchases_per_s",
            round(median(real_batches, "rps") * batch_size),
            "purchases/s",
            round(median(bare_batches, "rps") * batch_size),
            goal_value=50_000,
            purchases_per_request=batch_size,
            connections=batch_connections,
            uvicorn_workers=workers,
            p99_ms=median(real_batches, "p99_ms"),
            rounds=batch_rounds,
            seconds_per_round=seconds,
            failed_requests=batch_failures,
            load_average_1m=round(os.getloadavg()[0], 2),
            baseline_is="bare FastAPI endpoint receiving the same 1000-purchase bodies",
            rounds_detail={"api": real_batches, "bare": bare_batches},
        )

        # A login flood beside a signed-in customer (docs/security.md): wrong passwords of random usernames
        # from FLOOD_CONNECTIONS connections; the customer's reads and buys, alone and during it.
        from bench import login_flood

        flood = login_flood.measure(api_url, {"Authorization": f"Bearer {token}"}, FLOOD_CONNECTIONS, FLOOD_SECONDS)
        print("login flood:", json.dumps(flood), flush=True)
        record(
            "login_flood_read_p95_ms",
            flood["flood"]["reads"]["p95_ms"],
            "ms",
            flood["quiet"]["reads"]["p95_ms"],
            higher_is_better=False,
            goal="every read 200 and every buy 202, p95 < 1,000 ms; excess logins 429/503 with Retry-After",
            flood_connections=FLOOD_CONNECTIONS,
            flood_seconds=FLOOD_SECONDS,
            uvicorn_workers=workers,
            load_average_1m=round(os.getloadavg()[0], 2),
            baseline_is="the same customer's reads in the 3 s before the flood",
            **flood,
        )
        if failures or batch_failures:
            sys.exit("some requests to the API did not answer 202: see logs/bench_ingest_api.log")
    finally:
        for process in reversed(processes):
            stop_process(process)
        drop_database(dsn)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
