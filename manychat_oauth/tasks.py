"""Celery tasks that fan token refresh out to workers (extra ``celery``).

Only this module imports Celery; the rest of the app works without it.

Every task goes through :func:`manychat_oauth.refresh.refresh_connection`, the
same lease-protected path as ``manychat_refresh_tokens`` and lazy
``get_access_token()`` calls, so all three can run at once. A failed refresh
is recorded on the connection (``consecutive_failures``, ``next_attempt_at``)
and retried by a later scheduled run, never by a Celery retry: a failure is
counted once, and a refresh that the provider may already have processed is
never replayed blindly.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable

from celery import shared_task
from django.utils import timezone

from .health import check_due_connections
from .refresh import iter_due, refresh_connection

__all__ = [
    "check_due_connections_task",
    "enqueue_due_connections",
    "refresh_connection_task",
    "refresh_due_connections_task",
]


@shared_task(name="manychat_oauth.refresh_connection", ignore_result=True)  # type: ignore[untyped-decorator]
def refresh_connection_task(
    connection_id: int,
    force: bool = False,
    margin: float | None = None,
    not_refreshed_since: str | None = None,
) -> str:
    """Refresh one connection if it is still due (or ``force``); return the outcome.

    ``not_refreshed_since`` (ISO 8601): with ``force``, skip the connection if
    another worker refreshed it at or after that moment.
    """
    since = dt.datetime.fromisoformat(not_refreshed_since) if not_refreshed_since else None
    result = refresh_connection(int(connection_id), force=force, margin=margin, not_refreshed_since=since)
    return str(result.outcome)


@shared_task(name="manychat_oauth.refresh_due_connections", ignore_result=True)  # type: ignore[untyped-decorator]
def refresh_due_connections_task(margin: float | None = None) -> int:
    """Queue one ``refresh_connection_task`` per due connection, and the health checks; for Celery beat.

    One beat entry keeps everything valid, as one ``manychat_refresh_tokens``
    run from cron does.
    """
    check_due_connections_task.delay()
    return enqueue_due_connections(margin=margin)


@shared_task(name="manychat_oauth.check_due_connections", ignore_result=True)  # type: ignore[untyped-decorator]
def check_due_connections_task() -> dict[str, object]:
    """Check the API-key and App connections due for a health check (see ``health.py``).

    Each row is claimed with a conditional UPDATE of ``last_checked_at``, so
    overlapping runs check every connection once.
    """
    return check_due_connections().as_dict()


def enqueue_due_connections(
    *, margin: float | None = None, force: bool = False, connection_ids: Iterable[int] | None = None
) -> int:
    """Queue one refresh task per due connection (all, with ``force``); return how many.

    Due rows are read in chunks by primary key (see ``iter_due``), so memory
    stays flat at any table size and no token is decrypted here.
    """
    explicit = connection_ids is not None
    # With --all, a connection another worker refreshes after this moment is
    # not refreshed again by our task.
    since = timezone.now().isoformat() if force else None
    queued = 0
    for row, _reason in iter_due(margin=margin, force=force, connection_ids=connection_ids):
        refresh_connection_task.apply_async(
            args=(row.pk,),
            kwargs={"force": force or explicit, "margin": margin, "not_refreshed_since": since},
        )
        queued += 1
    return queued
