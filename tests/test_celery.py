"""Token refresh on real Celery workers (subprocesses, Redis broker) racing the refresh command.

Needs Redis at 127.0.0.1:6379 (``MANYCHAT_TEST_BROKER_URL`` to change it). Run on
PostgreSQL in CI (``make test-celery``).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection as db_connection

from manychat_oauth.models import ManychatConnection
from manychat_oauth.sandbox.models import SandboxToken

from .due_connections import make_connections, stored_refresh_token_is_current

pytestmark = [pytest.mark.celery, pytest.mark.slow]

ROOT = Path(__file__).resolve().parent.parent
CONNECTIONS = 200
WORKERS = 2
WORKER_CONCURRENCY = 4
#: Sandbox token-endpoint latency, so that the workers and the command overlap.
TOKEN_LATENCY_MS = 150
DEADLINE_SECONDS = 180


def broker_or_skip() -> str:
    """The broker URL, after checking Redis answers; skip (or fail under CI=true) when it does not."""
    import redis

    url = settings.CELERY_BROKER_URL
    try:
        redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=2).ping()
    except redis.RedisError as exc:
        reason = f"Redis is unreachable at {url} ({type(exc).__name__}); start redis-server to run the Celery tests."
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    return url


def subprocess_env(sandbox_url: str, queue: str) -> dict[str, str]:
    """Environment for subprocesses: this test's database, sandbox and queue."""
    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "MANYCHAT_TEST_DB_NAME": str(db_connection.settings_dict["NAME"]),
        "MANYCHAT_TEST_SANDBOX_URL": sandbox_url,
        "MANYCHAT_TEST_CELERY_QUEUE": queue,
        "PYTHONUNBUFFERED": "1",
    }


class Workers:
    """Celery workers running ``tests.celery_app`` as subprocesses, logging to files."""

    def __init__(self, env: dict[str, str], queue: str, log_dir: Path) -> None:
        self.env, self.queue, self.log_dir = env, queue, log_dir
        self.names: list[str] = []
        self.processes: list[subprocess.Popen[bytes]] = []
        self.logs: list[Path] = []

    def start(self, count: int, concurrency: int) -> None:
        for i in range(count):
            name = f"w{i}-{uuid.uuid4().hex[:8]}@manychat-tests"
            log = self.log_dir / f"worker-{i}.log"
            command = [
                sys.executable, "-m", "celery", "-A", "tests.celery_app", "worker",
                "-Q", self.queue, "-n", name, "-c", str(concurrency), "-P", "prefork", "-l", "INFO",
                "--without-gossip", "--without-mingle", "--without-heartbeat",
            ]  # fmt: skip
            with log.open("wb") as out:
                self.processes.append(
                    subprocess.Popen(command, cwd=ROOT, env=self.env, stdout=out, stderr=subprocess.STDOUT)
                )
            self.names.append(name)
            self.logs.append(log)

    def wait_ready(self, app, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        waiting = set(self.names)
        while waiting and time.monotonic() < deadline:
            self.check_alive()
            for reply in app.control.ping(destination=list(waiting), timeout=1.0):
                waiting -= set(reply)
        assert not waiting, f"workers not ready after {timeout}s: {sorted(waiting)}\n{self.tail()}"

    def check_alive(self) -> None:
        for process in self.processes:
            assert process.poll() is None, f"a worker exited with {process.returncode}\n{self.tail()}"

    def idle(self, app) -> bool:
        """Every worker answered, with no task running or reserved."""
        inspect = app.control.inspect(destination=self.names, timeout=1.0)
        for answer in (inspect.active(), inspect.reserved()):
            if answer is None or set(answer) != set(self.names) or any(answer.values()):
                return False
        return True

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)  # warm shutdown: finish the running tasks
        for process in self.processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def log_text(self) -> str:
        return "\n".join(log.read_text(errors="replace") for log in self.logs)

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])


def queue_length(broker_url: str, queue: str) -> int:
    import redis

    return int(redis.Redis.from_url(broker_url).llen(queue))


def forget_queue(broker_url: str, queue: str) -> None:
    """Delete this run's queue and kombu's bindings for it from Redis."""
    import redis

    client = redis.Redis.from_url(broker_url)
    keys = [queue, *client.scan_iter(match=f"_kombu.binding*.{queue}")]
    client.delete(*keys)


@pytest.fixture
def celery_app():
    broker_or_skip()
    from tests.celery_app import app

    assert not app.conf.task_always_eager
    return app


@pytest.fixture
def workers(celery_app, sandbox, tmp_path):
    from tests.celery_app import QUEUE

    running = Workers(subprocess_env(sandbox.base, QUEUE), QUEUE, tmp_path)
    yield running
    # Before pytest-django flushes or drops the test database, which open connections would block.
    running.stop()
    forget_queue(settings.CELERY_BROKER_URL, QUEUE)


def test_workers_and_refresh_command_together_refresh_every_connection_once_per_token(
    celery_app, workers, sandbox, user
):
    from manychat_oauth.tasks import enqueue_due_connections

    broker_url = settings.CELERY_BROKER_URL
    pks = make_connections(user, CONNECTIONS)
    sandbox.fault("token", latency_ms=TOKEN_LATENCY_MS)
    with celery_app.connection_for_write() as broker:
        broker.default_channel.queue_purge(workers.queue)

    workers.start(WORKERS, WORKER_CONCURRENCY)
    workers.wait_ready(celery_app)
    command = subprocess.Popen(
        [sys.executable, "-m", "django", "manychat_refresh_tokens", "--all", "--json", "--concurrency", "8"],
        cwd=ROOT,
        env=workers.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        queued = enqueue_due_connections()
        out, err = command.communicate(timeout=DEADLINE_SECONDS)
    finally:
        if command.poll() is None:  # leave no connection open to the test database
            command.kill()
            command.wait()
    assert queued == CONNECTIONS
    assert command.returncode == 0, err.decode()[-2000:]
    command_run = json.loads(out)
    deadline = time.monotonic() + DEADLINE_SECONDS
    while not (queue_length(broker_url, workers.queue) == 0 and workers.idle(celery_app)):
        workers.check_alive()
        assert time.monotonic() < deadline, f"tasks still pending after {DEADLINE_SECONDS}s\n{workers.tail()}"
        time.sleep(0.5)
    workers.stop()

    log = workers.log_text()
    task_outcomes = re.findall(
        r"Task manychat_oauth\.refresh_connection\[[^\]]+\] succeeded in [\d.e-]+s: '(\w+)'", log
    )
    assert "Traceback" not in log, workers.tail()
    assert len(task_outcomes) == queued, f"{len(task_outcomes)} tasks ran of {queued}\n{workers.tail()}"
    task_refreshes = task_outcomes.count("refreshed")
    assert set(task_outcomes) <= {"refreshed", "skipped"}
    # Both sides did real work, at the same time.
    assert task_refreshes > 0, workers.tail()
    assert command_run["refreshed"] > 0, command_run
    assert command_run["failed"] == command_run["reauth_required"] == 0, command_run

    connections = list(ManychatConnection.objects.filter(pk__in=pks))
    assert all(c.status == "active" for c in connections)
    assert all(c.consecutive_failures == 0 and c.last_error == "" for c in connections)
    assert all(c.refresh_lease_until is None for c in connections)
    assert all(stored_refresh_token_is_current(c) for c in connections)
    # Every original refresh token was used exactly once, and no token ever twice.
    assert max(SandboxToken.objects.values_list("refresh_uses", flat=True)) <= 1
    assert SandboxToken.objects.filter(parent__isnull=True, refresh_uses=1).count() == CONNECTIONS
    # Every refresh the sandbox performed was recorded by exactly one of the two sides.
    assert SandboxToken.objects.filter(parent__isnull=False).count() == task_refreshes + command_run["refreshed"]
