"""The race: 8 threads and 4 processes refresh the same 50 connections at once.

The sandbox rotates refresh tokens and rejects reuse with ``invalid_grant``, so
a single refresh token presented twice would mark a connection
``reauth_required``. Runs on SQLite (a file shared by every process) and on
PostgreSQL.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from django.db import connection as db_connection
from django.db import connections

from manychat_oauth.models import ManychatConnection
from manychat_oauth.refresh import RefreshRun, refresh_due_connections
from manychat_oauth.sandbox.models import SandboxToken

from .tokens import make_connection

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

ROOT = Path(__file__).resolve().parent.parent
CONNECTIONS = 50
THREADS = 8
PROCESSES = 4
HTTP_TIMEOUT = 30


def start_refresher_process(sandbox_base: str) -> subprocess.Popen[str]:
    """``python -m django manychat_refresh_tokens --all`` on this test's database and live server."""
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "MANYCHAT_TEST_DB_NAME": db_connection.settings_dict["NAME"],
        "MANYCHAT_TEST_SANDBOX_URL": sandbox_base,
        # A loaded CI machine must not turn slow answers into ambiguous timeouts.
        "MANYCHAT_TEST_HTTP_TIMEOUT": str(HTTP_TIMEOUT),
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    return subprocess.Popen(
        [sys.executable, "-m", "django", "manychat_refresh_tokens", "--all", "--json", "--concurrency", "2"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_threads_and_processes_never_reuse_a_refresh_token(sandbox, user, settings):
    settings.MANYCHAT_OAUTH_HTTP_TIMEOUT = HTTP_TIMEOUT
    rows = [make_connection(user, expires_in=86400) for _ in range(CONNECTIONS)]
    # A little latency so that refreshes overlap.
    sandbox.fault("token", latency_ms=30)

    processes = [start_refresher_process(sandbox.base) for _ in range(PROCESSES)]
    thread_runs: list[RefreshRun] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def refresh_until_the_processes_are_done() -> None:
        # Keep refreshing --all until every process has finished, so that the
        # threads race with the processes for their whole lifetime.
        try:
            while True:
                run = refresh_due_connections(force=True, concurrency=1)
                with lock:
                    thread_runs.append(run)
                if all(p.poll() is not None for p in processes):
                    return
        except BaseException as exc:  # reported below
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=refresh_until_the_processes_are_done) for _ in range(THREADS)]
    for thread in threads:
        thread.start()
    outputs = [p.communicate(timeout=240) for p in processes]
    for thread in threads:
        thread.join(timeout=240)
    assert not errors

    process_runs = []
    for process, (out, err) in zip(processes, outputs, strict=True):
        assert process.returncode == 0, err[-2000:]
        process_runs.append(json.loads(out.strip().splitlines()[-1]))
    for run in process_runs:
        assert run["failed"] == 0 and run["reauth_required"] == 0
        assert run["refreshed"] + run["skipped"] <= CONNECTIONS
    for run in thread_runs:
        assert (run.failed, run.reauth_required, run.config_error) == (0, 0, "")

    # They really raced: every worker saw rows another one had leased or refreshed.
    assert sum(run.skipped for run in thread_runs) + sum(run["skipped"] for run in process_runs) > 0
    refreshes = sum(run.refreshed for run in thread_runs) + sum(run["refreshed"] for run in process_runs)
    assert refreshes >= CONNECTIONS

    # No connection lost, and the provider never saw a refresh token twice.
    assert not ManychatConnection.objects.exclude(status=ManychatConnection.Status.ACTIVE).exists()
    assert SandboxToken.objects.filter(refresh_uses__gt=1).count() == 0
    assert SandboxToken.objects.filter(rotated_at__isnull=False).exclude(refresh_uses=1).count() == 0
    assert SandboxToken.objects.filter(rotated_at__isnull=False).count() == refreshes
    # Each row holds the newest token of its chain: unused, and the only unused one.
    leaves = set(SandboxToken.objects.filter(rotated_at__isnull=True).values_list("refresh_token", flat=True))
    assert len(leaves) == CONNECTIONS
    for row in rows:
        row.refresh_from_db()
        assert row.refresh_token in leaves
        assert row.consecutive_failures == 0 and row.refresh_lease_until is None
