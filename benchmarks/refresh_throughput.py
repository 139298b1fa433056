"""How fast does ``manychat_refresh_tokens`` refresh N due connections?

    python benchmarks/refresh_throughput.py --connections 1000 --latency-ms 50 --concurrency 16

Sets up its own SQLite databases in a temporary directory (the app's, and the
sandbox's in a second file, as Manychat's state would live on Manychat's
side), serves the sandbox token endpoint with ``--latency-ms`` of latency from
a multi-threaded WSGI server on 127.0.0.1 in a child process, then times:

(a) a sequential loop written the way the usual tutorial does it: for each
    connection, ``requests.post`` to the token URL, then ``save()``;
(b) ``refresh_due_connections`` (what ``manychat_refresh_tokens`` runs) on
    ``--concurrency`` threads.

(b) runs first, so that the peak RSS reported for it is not inflated by (a),
which loads every row. Prints a table, then one JSON object as its last line.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import resource
import secrets
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

CLIENT_ID = "bench-client"
CLIENT_SECRET = "bench-client-secret"
BATCH = 1000


class SandboxRouter:
    """The sandbox's tables live in their own database file ("sandbox")."""

    def db_for_read(self, model: Any, **hints: Any) -> str | None:
        return "sandbox" if model._meta.app_label == "manychat_sandbox" else None

    db_for_write = db_for_read

    def allow_relation(self, obj1: Any, obj2: Any, **hints: Any) -> bool | None:
        return None

    def allow_migrate(self, db: str, app_label: str, **hints: Any) -> bool:
        return (db == "sandbox") == (app_label == "manychat_sandbox")


def configure(db_dir: Path) -> None:
    import django
    from django.conf import settings

    def sqlite(name: str) -> dict[str, Any]:
        return {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": str(db_dir / name),
            "CONN_MAX_AGE": None,
            # WAL lets readers and one writer work at once (Django's recommended
            # production set-up for SQLite); IMMEDIATE avoids upgrade deadlocks.
            "OPTIONS": {
                "timeout": 30,
                "transaction_mode": "IMMEDIATE",
                "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
            },
        }

    settings.configure(
        DEBUG=False,
        SECRET_KEY="benchmark-secret-key-" + "x" * 40,
        ALLOWED_HOSTS=["127.0.0.1"],
        USE_TZ=True,
        INSTALLED_APPS=[
            "django.contrib.auth",
            "django.contrib.contenttypes",
            "manychat_oauth",
            "manychat_oauth.sandbox",
        ],
        DATABASES={"default": sqlite("app.sqlite3"), "sandbox": sqlite("sandbox.sqlite3")},
        DATABASE_ROUTERS=[f"{__name__}.SandboxRouter"],
        ROOT_URLCONF=__name__,
        # CommonMiddleware sets Content-Length, which lets the server keep
        # connections alive (as any production server would).
        MIDDLEWARE=["django.middleware.common.CommonMiddleware"],
        MANYCHAT_OAUTH_CLIENT_ID=CLIENT_ID,
        MANYCHAT_OAUTH_CLIENT_SECRET=CLIENT_SECRET,
        MANYCHAT_SANDBOX_TOKEN_LIFETIME=3600,
        SILENCED_SYSTEM_CHECKS=["manychat_oauth.W003"],
        LOGGING_CONFIG=None,
    )
    django.setup()


def __getattr__(name: str) -> Any:
    # ROOT_URLCONF is this module: the sandbox under /sandbox/manychat/.
    if name == "urlpatterns":
        from django.urls import include, path

        return [path("sandbox/manychat/", include("manychat_oauth.sandbox.urls"))]
    raise AttributeError(name)


# -- The sandbox server (child process) ---------------------------------------


def serve(db_dir: Path) -> None:
    from django.core.servers.basehttp import ThreadedWSGIServer, WSGIRequestHandler
    from django.core.wsgi import get_wsgi_application

    class QuietHandler(WSGIRequestHandler):
        # Headers and body go out in two writes: with Nagle's algorithm on, the
        # body waits for the client's delayed ACK (40 ms) on kept-alive
        # connections. Production servers (gunicorn, uWSGI) set TCP_NODELAY too.
        disable_nagle_algorithm = True

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadedWSGIServer(("127.0.0.1", 0), QuietHandler)
    server.request_queue_size = 256
    server.set_app(get_wsgi_application())
    print(server.server_address[1], flush=True)
    server.serve_forever()


def start_server(db_dir: Path) -> tuple[subprocess.Popen[str], int]:
    process = subprocess.Popen(
        [sys.executable, __file__, "--serve", str(db_dir)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    port = int(process.stdout.readline())
    return process, port


# -- Set-up ---------------------------------------------------------------


def set_up(n: int, latency_ms: int) -> None:
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from django.utils import timezone

    from manychat_oauth.models import ManychatConnection
    from manychat_oauth.sandbox.faults import set_fault
    from manychat_oauth.sandbox.models import SandboxPage, SandboxToken

    call_command("migrate", verbosity=0)
    call_command("migrate", database="sandbox", verbosity=0)
    user = get_user_model().objects.create_user("bench")
    page = SandboxPage.objects.create(page_id="1000001", name="Benchmark page")
    now = timezone.now()
    for start in range(0, n, BATCH):
        size = min(BATCH, n - start)
        tokens = [
            SandboxToken(
                page=page,
                client_id=CLIENT_ID,
                access_token="sbx_at_" + secrets.token_urlsafe(32),
                refresh_token="sbx_rt_" + secrets.token_urlsafe(32),
                expires_at=now + dt.timedelta(seconds=60),
            )
            for _ in range(size)
        ]
        SandboxToken.objects.bulk_create(tokens)
        # Due: expires in a minute, well inside the margin.
        ManychatConnection.objects.bulk_create(
            ManychatConnection(
                user=user,
                page_id=str(start + i),
                access_token=token.access_token,
                refresh_token=token.refresh_token,
                expires_at=now + dt.timedelta(seconds=60),
                last_refreshed_at=now - dt.timedelta(seconds=3540),
            )
            for i, token in enumerate(tokens)
        )
    if latency_ms:
        set_fault("token", latency_ms=latency_ms)


# -- Measuring ------------------------------------------------------------


class QueryCounter:
    """Counts SQL statements on the app's database ("default"), in every thread."""

    def __init__(self) -> None:
        self.count = 0
        self.enabled = False
        self._lock = threading.Lock()

    def __call__(self, execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        if self.enabled:
            with self._lock:
                self.count += 1
        return execute(sql, params, many, context)

    def install(self) -> None:
        from django.db import connections
        from django.db.backends.signals import connection_created

        def on_created(sender: Any, connection: Any, **kwargs: Any) -> None:
            if connection.alias == "default" and self not in connection.execute_wrappers:
                connection.execute_wrappers.append(self)

        connection_created.connect(on_created, weak=False)
        connections["default"].execute_wrappers.append(self)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def run_engine(concurrency: int, counter: QueryCounter) -> dict[str, Any]:
    from manychat_oauth.refresh import refresh_due_connections

    counter.count, counter.enabled = 0, True
    started = time.perf_counter()
    run = refresh_due_connections(concurrency=concurrency)
    wall = time.perf_counter() - started
    counter.enabled = False
    return {
        "wall": wall,
        "refreshed": run.refreshed,
        "failed": run.failed + run.reauth_required,
        "queries": counter.count,
    }


def run_sequential(limit: int | None, counter: QueryCounter) -> dict[str, Any]:
    """The tutorial loop: for each connection, POST to the token URL, then save()."""
    import requests
    from django.conf import settings
    from django.utils import timezone

    from manychat_oauth.models import ManychatConnection

    counter.count, counter.enabled = 0, True
    refreshed = failed = 0
    started = time.perf_counter()
    rows = ManychatConnection.objects.filter(status="active", auth_type="oauth").order_by("pk")
    for connection in rows[:limit] if limit else rows:
        response = requests.post(
            settings.MANYCHAT_OAUTH_TOKEN_URL,
            data={
                "grant_type": "refresh_token",
                "refresh_token": connection.refresh_token,
                "client_id": settings.MANYCHAT_OAUTH_CLIENT_ID,
                "client_secret": settings.MANYCHAT_OAUTH_CLIENT_SECRET,
            },
            timeout=10,
        )
        if response.status_code != 200:
            failed += 1
            continue
        data = response.json()
        connection.access_token = data["access_token"]
        connection.refresh_token = data.get("refresh_token", connection.refresh_token)
        connection.expires_at = timezone.now() + dt.timedelta(seconds=data["expires_in"])
        connection.last_refreshed_at = timezone.now()
        connection.save()
        refreshed += 1
    wall = time.perf_counter() - started
    counter.enabled = False
    return {"wall": wall, "refreshed": refreshed, "failed": failed, "queries": counter.count}


# -- Report ---------------------------------------------------------------


def report(args: argparse.Namespace, engine: dict[str, Any], sequential: dict[str, Any], rss: dict[str, float]) -> None:
    n, latency, concurrency = args.connections, args.latency_ms, args.concurrency
    ideal = math.ceil(n / concurrency) * latency / 1000
    measured = sequential["refreshed"] + sequential["failed"]
    # With --sequential-limit the loop ran on the first K rows; its time is scaled to N.
    sequential_wall = sequential["wall"] * n / measured if measured else float("nan")
    estimated = " (est.)" if measured != n else ""

    def row(name: str, wall: float, result: dict[str, Any], peak: float, note: str = "") -> str:
        per_connection = result["queries"] / result["refreshed"] if result["refreshed"] else float("nan")
        return (
            f"| {name}{note} | {wall:8.2f} | {n / wall:8.1f} | {sequential_wall / wall:6.1f}x | "
            f"{wall / ideal if ideal else math.nan:5.2f}x | {per_connection:5.2f} | {peak:7.1f} |"
        )

    print(f"N={n} connections, token endpoint latency {latency} ms, concurrency {concurrency}")
    print(
        f"ideal = ceil(N/C) x L = {ideal:.2f} s; failures: engine {engine['failed']}, sequential {sequential['failed']}"
    )
    print()
    print("| run | wall s | refreshes/s | vs sequential | vs ideal | SQL/conn | peak RSS MB |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    print(row("sequential requests.post + save()", sequential_wall, sequential, rss["after_sequential"], estimated))
    print(row(f"manychat_refresh_tokens, C={concurrency}", engine["wall"], engine, rss["after_engine"]))
    print()
    queries = engine["queries"] / engine["refreshed"] if engine["refreshed"] else None
    print(
        json.dumps(
            {
                "connections": n,
                "latency_ms": latency,
                "concurrency": concurrency,
                "engine_wall_s": round(engine["wall"], 3),
                "engine_refreshed": engine["refreshed"],
                "engine_failed": engine["failed"],
                "sequential_wall_s": round(sequential_wall, 3),
                "sequential_measured": measured,
                "ideal_s": round(ideal, 3),
                "refreshes_per_s": round(n / engine["wall"], 1),
                "speedup_vs_sequential": round(sequential_wall / engine["wall"], 2),
                "ratio_to_ideal": round(engine["wall"] / ideal, 3) if ideal else None,
                "queries_per_connection": round(queries, 3) if queries is not None else None,
                "peak_rss_mb": round(rss["after_engine"], 1),
                "peak_rss_before_engine_mb": round(rss["before_engine"], 1),
            }
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--connections", type=int, default=1000, metavar="N", help="due connections (default 1000)")
    parser.add_argument("--latency-ms", type=int, default=50, metavar="L", help="token endpoint latency (default 50)")
    parser.add_argument("--concurrency", type=int, default=16, metavar="C", help="refresher threads (default 16)")
    parser.add_argument(
        "--sequential-limit",
        type=int,
        metavar="K",
        help="run the sequential loop on the first K connections only and scale its time to N (default: all N)",
    )
    parser.add_argument("--serve", metavar="DIR", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        configure(Path(args.serve))
        serve(Path(args.serve))
        return
    if args.connections < 1 or args.concurrency < 1 or args.latency_ms < 0:
        parser.error("--connections and --concurrency must be positive, --latency-ms not negative")

    with tempfile.TemporaryDirectory(prefix="manychat-bench-") as tmp:
        db_dir = Path(tmp)
        configure(db_dir)
        set_up(args.connections, args.latency_ms)
        server, port = start_server(db_dir)
        try:
            from django.conf import settings
            from django.db import connections

            settings.MANYCHAT_OAUTH_TOKEN_URL = f"http://127.0.0.1:{port}/sandbox/manychat/oauth/token"
            counter = QueryCounter()
            counter.install()
            connections.close_all()
            rss = {"before_engine": peak_rss_mb()}
            engine = run_engine(args.concurrency, counter)
            rss["after_engine"] = peak_rss_mb()
            sequential = run_sequential(args.sequential_limit, counter)
            rss["after_sequential"] = peak_rss_mb()
        finally:
            server.terminate()
            server.wait(timeout=10)
        report(args, engine, sequential, rss)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    main()
