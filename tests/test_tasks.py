"""The Celery tasks, run eagerly in-process against the sandbox (the real-worker tests are in test_celery.py)."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from manychat_oauth.models import ManychatConnection
from manychat_oauth.sandbox.accounts import create_api_key, create_page, revoke_api_keys
from manychat_oauth.sandbox.models import SandboxToken
from manychat_oauth.tasks import (
    check_due_connections_task,
    enqueue_due_connections,
    refresh_connection_task,
    refresh_due_connections_task,
)

from .due_connections import make_connections, stored_refresh_token_is_current


@pytest.fixture
def eager():
    from tests.celery_app import app

    saved = (app.conf.task_always_eager, app.conf.task_eager_propagates)
    app.conf.task_always_eager = True
    app.conf.task_eager_propagates = True
    yield app
    app.conf.task_always_eager, app.conf.task_eager_propagates = saved


def refreshed(pks):
    return set(
        ManychatConnection.objects.filter(
            pk__in=pks, last_refreshed_at__gte=timezone.now() - dt.timedelta(minutes=5)
        ).values_list("pk", flat=True)
    )


def test_refresh_connection_task_refreshes_a_due_connection(sandbox, user, eager):
    [pk] = make_connections(user, 1)
    assert refresh_connection_task.delay(pk).get() == "refreshed"
    connection = ManychatConnection.objects.get(pk=pk)
    assert connection.status == "active"
    assert connection.expires_at > timezone.now()
    assert stored_refresh_token_is_current(connection)


def test_refresh_connection_task_skips_a_connection_that_is_not_due(sandbox, user, eager):
    [pk] = make_connections(user, 1, expires_in=dt.timedelta(days=1))
    before = ManychatConnection.objects.get(pk=pk).access_token
    assert refresh_connection_task.delay(pk).get() == "skipped"
    assert ManychatConnection.objects.get(pk=pk).access_token == before


def test_enqueue_queues_only_due_connections(sandbox, user, eager):
    due = make_connections(user, 3)
    not_due = make_connections(user, 1, expires_in=dt.timedelta(days=1))
    needs_reauth = make_connections(user, 1)
    ManychatConnection.objects.filter(pk__in=needs_reauth).update(status="reauth_required")

    assert enqueue_due_connections() == 3
    assert refreshed(due + not_due + needs_reauth) == set(due)


def test_enqueue_with_connection_ids_refreshes_those_even_when_not_due(sandbox, user, eager):
    not_due = make_connections(user, 2, expires_in=dt.timedelta(days=1))
    assert enqueue_due_connections(connection_ids=not_due[:1]) == 1
    assert refreshed(not_due) == {not_due[0]}


def test_enqueue_force_refreshes_every_active_oauth_connection(sandbox, user, eager):
    pks = make_connections(user, 2) + make_connections(user, 2, expires_in=dt.timedelta(days=1))
    assert enqueue_due_connections(force=True) == 4
    assert refreshed(pks) == set(pks)


def test_forced_task_skips_a_connection_refreshed_after_the_run_started(sandbox, user, eager):
    [pk] = make_connections(user, 1)
    run_started = timezone.now().isoformat()
    assert refresh_connection_task.delay(pk).get() == "refreshed"
    assert refresh_connection_task.delay(pk, force=True, not_refreshed_since=run_started).get() == "skipped"
    assert SandboxToken.objects.filter(parent__isnull=False).count() == 1


def test_beat_task_enqueues_the_due_connections(sandbox, user, eager):
    due = make_connections(user, 2)
    assert refresh_due_connections_task.delay().get() == 2
    assert refreshed(due) == set(due)


def test_beat_task_also_runs_the_health_checks_of_key_connections(sandbox, user, eager):
    page = create_page("Checked Bakery")
    key = create_api_key(page).key
    connection = ManychatConnection.objects.create(
        user=user, auth_type="api_key", page_id=page.page_id, page_name="Old name", access_token=key
    )
    revoke_api_keys(page)
    refresh_due_connections_task.delay().get()
    connection.refresh_from_db()
    assert connection.status == "reauth_required"
    assert connection.last_checked_at is not None


def test_check_task_reports_its_counts(sandbox, user, eager):
    page = create_page("Renamed Bakery")
    ManychatConnection.objects.create(
        user=user,
        auth_type="api_key",
        page_id=page.page_id,
        page_name="Old name",
        access_token=create_api_key(page).key,
    )
    counts = check_due_connections_task.delay().get()
    assert (counts["checked"], counts["key_rejected"], counts["check_failed"]) == (1, 0, 0)
    assert ManychatConnection.objects.get(user=user).page_name == "Renamed Bakery"


def test_failed_refresh_is_recorded_on_the_row_and_not_retried_by_celery(sandbox, user, eager):
    [pk] = make_connections(user, 1)
    sandbox.fault("token", status=503, times=1)
    assert refresh_connection_task.delay(pk).get() == "failed"
    connection = ManychatConnection.objects.get(pk=pk)
    # A Celery retry would have gone through on the second call, the fault being used up.
    assert connection.consecutive_failures == 1
    assert connection.next_attempt_at > timezone.now()
    assert connection.expires_at < timezone.now()
    assert stored_refresh_token_is_current(connection)


def test_rejected_refresh_token_marks_the_connection_reauth_required(sandbox, user, eager):
    [pk] = make_connections(user, 1)
    SandboxToken.objects.update(rotated_at=timezone.now())
    assert refresh_connection_task.delay(pk).get() == "reauth_required"
    assert ManychatConnection.objects.get(pk=pk).status == "reauth_required"


def test_command_enqueue_says_how_many_tasks_it_queued(sandbox, user, eager, capsys):
    make_connections(user, 2)
    call_command("manychat_refresh_tokens", "--enqueue", "--dry-run")  # dry run wins: nothing queued
    assert "2 connection(s) would be refreshed" in capsys.readouterr().out
    call_command("manychat_refresh_tokens", "--enqueue")
    assert "Queued 2 refresh task(s) and the health checks." in capsys.readouterr().out
    call_command("manychat_refresh_tokens", "--enqueue", "--json")
    assert json.loads(capsys.readouterr().out) == {"enqueued": 0, "health_checks_enqueued": True}


def test_command_enqueue_without_celery_explains_how_to_install_it(db, monkeypatch):
    monkeypatch.setitem(sys.modules, "celery", None)
    monkeypatch.delitem(sys.modules, "manychat_oauth.tasks")
    with pytest.raises(CommandError, match=r"pip install 'django-manychat-oauth\[celery\]'"):
        call_command("manychat_refresh_tokens", "--enqueue")


def test_the_app_imports_without_celery():
    """Every module but tasks.py loads, with Django set up, when Celery is not importable."""
    script = """
import pkgutil, sys
sys.modules["celery"] = None
import django
django.setup()
import manychat_oauth
names = [m.name for m in pkgutil.walk_packages(manychat_oauth.__path__, "manychat_oauth.") if m.name != "manychat_oauth.tasks"]
for name in names:
    __import__(name)
from django.core.management import call_command
call_command("check")
print(len(names))
"""
    root = Path(__file__).resolve().parent.parent
    env = {"DJANGO_SETTINGS_MODULE": "tests.settings", "PATH": "/usr/bin:/bin"}
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=root, env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert int(done.stdout.split()[-1]) > 20
