"""Refreshing OAuth tokens: one connection safely, or every due one in bulk.

At most one refresh per connection at a time
-------------------------------------------
Before refreshing, a worker claims a *lease* on the row with one conditional
``UPDATE ... SET refresh_lease_until = now + LEASE WHERE pk = %s AND
(refresh_lease_until IS NULL OR refresh_lease_until < now)``. The database
executes that statement atomically: on PostgreSQL a second concurrent UPDATE
of the same row waits for the first to commit, then re-checks the WHERE clause
against the new row and matches nothing; on SQLite writers are serialised by
the database lock. So exactly one worker sees "1 row updated" and owns the
lease, whether the workers are threads, processes, hosts or Celery tasks. No
transaction is held open across the HTTP call (``select_for_update`` would do
that, and is a no-op on SQLite).

After claiming, the worker re-reads the row: another worker may have refreshed
it between our decision and our claim, and then we skip. The lease is longer
than any refresh can take (several HTTP timeouts), and it expires on its own
if a worker dies, so a crash never blocks a connection for long. Lease times
come from each worker's clock: hosts must keep their clocks within a few
seconds of each other (NTP), far less than the lease.

The outcome is written in one UPDATE that also releases the lease. A success
is written whatever happened to the lease (unless the user disconnected
meanwhile): the provider may already have rotated the refresh token, and the
new one must never be lost. Failures are written only by the lease owner.
"""

from __future__ import annotations

import datetime as dt
import enum
import logging
import queue
import random
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from django.db import OperationalError, connections, router
from django.db.models import Q
from django.dispatch import Signal
from django.utils import timezone

from . import client
from .conf import app_settings
from .exceptions import (
    InvalidClient,
    InvalidGrant,
    InvalidTokenResponse,
    ManychatOAuthError,
    OAuthError,
    ProviderUnavailable,
)
from .models import ManychatConnection
from .signals import reauth_required, tokens_refreshed

logger = logging.getLogger(__name__)

BACKOFF_BASE = 60.0
BACKOFF_MAX = 6 * 3600.0
#: The longest ``Retry-After`` we honour.
RETRY_AFTER_MAX = 24 * 3600.0
#: A connection whose provider gave no expiry is refreshed this long after its last refresh.
NO_EXPIRY_REFRESH_AFTER = dt.timedelta(days=1)
#: How often a lazy ``get_access_token()`` caller polls a refresh in flight elsewhere.
LAZY_POLL_SECONDS = 0.05
#: Why ``refresh_connection`` skipped a row whose lease another worker holds.
LEASE_HELD = "another worker is refreshing it"
#: Attempts to store refreshed tokens when the database fails (e.g. SQLite "database is locked").
STORE_ATTEMPTS = 3
#: Rows read per query when selecting due connections.
CHUNK_SIZE = 500
#: Fields needed to decide whether a row is due (no token is decrypted for that).
DUE_FIELDS = ("pk", "status", "auth_type", "expires_at", "last_refreshed_at", "next_attempt_at")


class Outcome(enum.StrEnum):
    REFRESHED = "refreshed"
    SKIPPED = "skipped"
    REAUTH_REQUIRED = "reauth_required"
    FAILED = "failed"
    CONFIG_ERROR = "config_error"

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class RefreshResult:
    """What happened to one connection."""

    connection_id: int
    outcome: Outcome
    reason: str = ""
    error_code: str = ""
    retry_at: dt.datetime | None = None

    @property
    def ok(self) -> bool:
        return self.outcome in (Outcome.REFRESHED, Outcome.SKIPPED)


@dataclass
class RefreshRun:
    """Counts for a bulk run, plus the results that were not successes."""

    refreshed: int = 0
    reauth_required: int = 0
    failed: int = 0
    skipped: int = 0
    config_error: str = ""
    problems: list[RefreshResult] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    MAX_PROBLEMS = 100

    def add(self, result: RefreshResult) -> None:
        with self._lock:
            if result.outcome is Outcome.CONFIG_ERROR:
                self.config_error = self.config_error or result.reason
                return
            setattr(self, result.outcome.value, getattr(self, result.outcome.value) + 1)
            if not result.ok and len(self.problems) < self.MAX_PROBLEMS:
                self.problems.append(result)

    @property
    def exit_code(self) -> int:
        if self.config_error:
            return 2
        return 1 if self.failed or self.reauth_required else 0

    def summary(self) -> str:
        return (
            f"refreshed={self.refreshed} reauth_required={self.reauth_required} "
            f"failed={self.failed} skipped={self.skipped}"
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "refreshed": self.refreshed,
            "reauth_required": self.reauth_required,
            "failed": self.failed,
            "skipped": self.skipped,
            "config_error": self.config_error or None,
            "exit_code": self.exit_code,
            "problems": [
                {"connection_id": r.connection_id, "outcome": str(r.outcome), "error": r.error_code, "reason": r.reason}
                for r in self.problems
            ],
        }


def lease_duration() -> dt.timedelta:
    """Longer than a refresh can take: connect + read timeouts, several times over."""
    return dt.timedelta(seconds=max(60.0, 6 * app_settings.HTTP_TIMEOUT))


def effective_margin(connection: ManychatConnection, margin: float | None = None) -> dt.timedelta:
    """The refresh margin, capped to half the token's lifetime (so short tokens are not always due)."""
    wanted = dt.timedelta(seconds=app_settings.REFRESH_MARGIN if margin is None else margin)
    if connection.expires_at and connection.last_refreshed_at:
        lifetime = connection.expires_at - connection.last_refreshed_at
        if lifetime > dt.timedelta(0):
            return min(wanted, lifetime / 2)
    return wanted


def due_reason(
    connection: ManychatConnection, *, now: dt.datetime, margin: float | None = None, ignore_backoff: bool = False
) -> str | None:
    """Why ``connection`` should be refreshed now, or ``None`` if it should not."""
    if (
        connection.status != ManychatConnection.Status.ACTIVE
        or connection.auth_type != ManychatConnection.AuthType.OAUTH
    ):
        return None
    if not ignore_backoff and connection.next_attempt_at and connection.next_attempt_at > now:
        return None
    if connection.expires_at is None:
        last = connection.last_refreshed_at
        if last is None or last <= now - NO_EXPIRY_REFRESH_AFTER:
            return "no expiry given; last refreshed over a day ago"
        return None
    if connection.expires_at <= now:
        return "expired"
    if connection.expires_at - effective_margin(connection, margin) <= now:
        return "expires within the margin"
    return None


def backoff_delay(failures: int, retry_after: float | None = None) -> float:
    """Seconds to wait after the ``failures``-th failure in a row.

    About one minute, doubling per failure, with +/-20% jitter so that rows
    that failed together do not retry together, never more than six hours.
    A ``Retry-After`` sent by the provider is honoured (up to a day).
    """
    exponent = min(max(0, failures - 1), 32)  # 2**32 minutes is far past the cap
    delay = min(BACKOFF_MAX, BACKOFF_BASE * 2.0**exponent * random.uniform(0.8, 1.2))  # noqa: S311 - jitter
    if retry_after is not None:
        delay = max(delay, min(retry_after, RETRY_AFTER_MAX))
    return delay


def _claim(pk: int, owner: str) -> bool:
    now = timezone.now()
    return bool(
        ManychatConnection.objects.filter(pk=pk)
        .filter(Q(refresh_lease_until__isnull=True) | Q(refresh_lease_until__lt=now))
        .update(refresh_lease_until=now + lease_duration(), refresh_lease_owner=owner)
    )


def _release(pk: int, owner: str) -> None:
    ManychatConnection.objects.filter(pk=pk, refresh_lease_owner=owner).update(
        refresh_lease_until=None, refresh_lease_owner=""
    )


def refresh_connection(
    connection: ManychatConnection | int,
    *,
    force: bool = False,
    margin: float | None = None,
    not_refreshed_since: dt.datetime | None = None,
) -> RefreshResult:
    """Refresh one connection if it is due (or ``force``), under the lease.

    ``not_refreshed_since``: with ``force``, skip a connection another worker
    refreshed at or after this moment (so concurrent ``--all`` runs do not
    refresh the same row twice). When given a model instance, it is reloaded
    from the database afterwards.
    """
    pk = connection if isinstance(connection, int) else connection.pk
    result = _refresh_pk(pk, force=force, margin=margin, not_refreshed_since=not_refreshed_since)
    if isinstance(connection, ManychatConnection) and result.outcome is not Outcome.SKIPPED:
        connection.refresh_from_db()
    return result


def _refresh_pk(
    pk: int, *, force: bool, margin: float | None, not_refreshed_since: dt.datetime | None
) -> RefreshResult:
    owner = uuid.uuid4().hex
    if not _claim(pk, owner):
        return RefreshResult(pk, Outcome.SKIPPED, LEASE_HELD)
    released = False
    try:
        # Re-read under the lease: another worker may have refreshed the row
        # between our decision and our claim.
        current = ManychatConnection.objects.filter(pk=pk).first()
        if current is None:
            return RefreshResult(pk, Outcome.SKIPPED, "deleted")
        now = timezone.now()
        reason = _still_wanted(current, now=now, force=force, margin=margin, not_refreshed_since=not_refreshed_since)
        if reason is None:
            return RefreshResult(pk, Outcome.SKIPPED, "not due (already refreshed or no longer active)")
        result = _refresh_claimed(current, owner)
        # These outcomes release the lease in the same UPDATE that records them.
        released = result.outcome in (Outcome.REFRESHED, Outcome.FAILED, Outcome.REAUTH_REQUIRED)
        return result
    finally:
        if not released:
            _release(pk, owner)


def _still_wanted(
    current: ManychatConnection,
    *,
    now: dt.datetime,
    force: bool,
    margin: float | None,
    not_refreshed_since: dt.datetime | None,
) -> str | None:
    if current.status != ManychatConnection.Status.ACTIVE or current.auth_type != ManychatConnection.AuthType.OAUTH:
        return None
    if not current.refresh_token:
        return None
    if force:
        if not_refreshed_since and current.last_refreshed_at and current.last_refreshed_at >= not_refreshed_since:
            return None
        return "forced"
    return due_reason(current, now=now, margin=margin)


def _refresh_claimed(current: ManychatConnection, owner: str) -> RefreshResult:
    pk = current.pk
    assert current.refresh_token is not None
    try:
        tokens = client.refresh_access_token(current.refresh_token)
    except InvalidClient as exc:
        logger.error(
            "Token refresh refused the client credentials (%s): check MANYCHAT_OAUTH_CLIENT_ID/SECRET.", exc.code
        )
        return RefreshResult(pk, Outcome.CONFIG_ERROR, str(exc), exc.code)
    except InvalidGrant as exc:
        return _record_reauth(current, owner, exc)
    except (ProviderUnavailable, InvalidTokenResponse, OAuthError) as exc:
        return _record_failure(current, owner, exc)

    if not _store_tokens(current, tokens):
        logger.warning(
            "Connection %s was connected again or disconnected during its refresh; the refreshed tokens were dropped.",
            pk,
        )
        return RefreshResult(pk, Outcome.SKIPPED, "connected again or disconnected during the refresh")
    logger.info("Connection %s refreshed; new token expires in %ss.", pk, tokens.expires_in)
    _send_robust(tokens_refreshed, "tokens_refreshed", pk)
    return RefreshResult(pk, Outcome.REFRESHED)


def _send_robust(signal: Signal, name: str, pk: int) -> None:
    """Send ``signal`` for the stored row; a failing receiver cannot undo a recorded outcome."""
    if not signal.receivers:
        return
    connection = ManychatConnection.objects.filter(pk=pk).first()
    if connection is None:
        return
    for receiver, error in signal.send_robust(sender=ManychatConnection, connection=connection):
        if isinstance(error, Exception):
            logger.error("A %s receiver (%r) raised %s.", name, receiver, type(error).__name__)


def _store_tokens(current: ManychatConnection, tokens: client.TokenResponse) -> bool:
    """One write: new access token, new (or kept) refresh token, expiry, failures reset, lease released.

    Not conditional on the lease: the provider has rotated the refresh token,
    and the only copy of the new one is in ``tokens``. A database hiccup here
    is retried a few times before giving up (and logging loudly).
    """
    now = timezone.now()
    values = {
        "access_token": tokens.access_token,
        "refresh_token": tokens.refresh_token or current.refresh_token,
        "token_type": tokens.token_type,
        "scope": tokens.scope or current.scope,
        "expires_at": tokens.expires_at,
        "last_refreshed_at": now,
        "consecutive_failures": 0,
        "last_error": "",
        "next_attempt_at": None,
        "refresh_lease_until": None,
        "refresh_lease_owner": "",
        "updated_at": now,
    }
    # A user who disconnected meanwhile stays disconnected, without tokens; one
    # who connected again keeps the new credential (the version changed).
    rows = ManychatConnection.objects.filter(pk=current.pk, credentials_version=current.credentials_version).exclude(
        status=ManychatConnection.Status.DISCONNECTED
    )
    for attempt in range(1, STORE_ATTEMPTS + 1):
        try:
            return bool(rows.update(**values))
        except OperationalError:
            if attempt == STORE_ATTEMPTS:
                logger.critical("Could not store the refreshed tokens of connection %s.", current.pk)
                raise
            time.sleep(0.2 * attempt)
    return False  # not reached: the last attempt returns or raises


def _record_reauth(current: ManychatConnection, owner: str, exc: ManychatOAuthError) -> RefreshResult:
    pk = current.pk
    now = timezone.now()
    updated = ManychatConnection.objects.filter(
        pk=pk, refresh_lease_owner=owner, credentials_version=current.credentials_version
    ).update(
        status=ManychatConnection.Status.REAUTH_REQUIRED,
        last_error=_short(f"{exc.code}: the provider refused the refresh token; the user must connect again."),
        next_attempt_at=None,
        refresh_lease_until=None,
        refresh_lease_owner="",
        updated_at=now,
    )
    if not updated:
        # We lost the lease (we were too slow), or the user connected again
        # meanwhile: the refused token is not the one stored now.
        return RefreshResult(pk, Outcome.SKIPPED, "lease lost or connected again before recording", exc.code)
    logger.warning("Connection %s needs re-authorization (%s).", pk, exc.code)
    _send_robust(reauth_required, "reauth_required", pk)
    return RefreshResult(pk, Outcome.REAUTH_REQUIRED, str(exc), exc.code)


def _record_failure(current: ManychatConnection, owner: str, exc: ManychatOAuthError) -> RefreshResult:
    pk = current.pk
    now = timezone.now()
    failures = current.consecutive_failures + 1
    retry_after = getattr(exc, "retry_after", None)
    retry_at = now + dt.timedelta(seconds=backoff_delay(failures, retry_after))
    message = f"{exc.code}: {exc}"
    # A read timeout, or a 2xx answer we cannot use: the provider may have
    # rotated the refresh token already.
    if getattr(exc, "ambiguous", False) or isinstance(exc, InvalidTokenResponse):
        message = f"{exc.code} (ambiguous: the provider may have processed the refresh)"
    updated = ManychatConnection.objects.filter(
        pk=pk, refresh_lease_owner=owner, credentials_version=current.credentials_version
    ).update(
        consecutive_failures=failures,
        last_error=_short(message),
        next_attempt_at=retry_at,
        refresh_lease_until=None,
        refresh_lease_owner="",
        updated_at=now,
    )
    if not updated:
        return RefreshResult(pk, Outcome.SKIPPED, "lease lost or connected again before recording", exc.code)
    logger.warning(
        "Refresh of connection %s failed (%s); attempt %s, next at %s.", pk, exc.code, failures, retry_at.isoformat()
    )
    return RefreshResult(pk, Outcome.FAILED, str(exc), exc.code, retry_at)


def _short(text: str) -> str:
    return text if len(text) <= 255 else text[:252] + "..."


# -- Lazy refresh -----------------------------------------------------------


class ConnectionNotActive(ManychatOAuthError):
    """The connection needs re-authorization or was disconnected."""

    code = "not_active"


def get_access_token(connection: ManychatConnection) -> str:
    """A valid access token for ``connection``, refreshing it first when due.

    When another worker is refreshing the connection right now, wait (up to
    about one HTTP timeout) for its result instead of failing or refreshing
    a second time.
    """
    deadline = time.monotonic() + lazy_wait_seconds()
    while True:
        if connection.status != ManychatConnection.Status.ACTIVE:
            raise ConnectionNotActive(
                f"Connection {connection.pk} is {connection.status}; the user must connect again."
            )
        if connection.auth_type != ManychatConnection.AuthType.OAUTH:
            return _token_of(connection)
        now = timezone.now()
        if due_reason(connection, now=now, ignore_backoff=True) is None:
            return _token_of(connection)
        if connection.next_attempt_at and connection.next_attempt_at > now:
            return _valid_or_raise(connection, "refresh is backing off after failures")
        result = refresh_connection_committed(connection.pk)
        if result.outcome is Outcome.CONFIG_ERROR:
            raise InvalidClient(result.reason)
        connection.refresh_from_db()
        if result.outcome is Outcome.REAUTH_REQUIRED or connection.status != ManychatConnection.Status.ACTIVE:
            continue  # raises ConnectionNotActive above
        if result.outcome is Outcome.REFRESHED:
            return _token_of(connection)
        if result.outcome is Outcome.FAILED:
            return _valid_or_raise(connection, result.error_code)
        if result.reason == LEASE_HELD:
            if not _wait_for_lease(connection, deadline):
                return _valid_or_raise(connection, "another worker is still refreshing")
            continue  # decide again from the row as the other worker left it
        # Skipped for another reason: refreshed meanwhile, or nothing to refresh with.
        return _valid_or_raise(connection, "it cannot be refreshed")


#: The helper thread could not see the row: it is not committed yet.
_NOT_VISIBLE = object()


def refresh_connection_committed(pk: int, *, force: bool = False) -> RefreshResult:
    """``refresh_connection(pk, force=force)``, committed at once even inside the caller's transaction.

    Inside ``transaction.atomic()`` (``ATOMIC_REQUESTS`` for one) the new
    tokens would be committed with the caller's transaction, and lost if it
    rolled back, while the provider has already rotated the refresh token. So
    the refresh runs on its own database connection in a helper thread. If the
    caller's transaction holds the row (``select_for_update``, an earlier
    save), the helper gives up after ``lock_timeout`` and the refresh runs in
    the caller's transaction after all; so it does when the row is not
    committed yet (created in the same transaction, or a ``TestCase`` test).
    On SQLite an open transaction may hold the database's write lock, so the
    refresh runs in it.
    """
    alias = router.db_for_write(ManychatConnection)
    db = connections[alias]
    if not db.in_atomic_block or db.vendor == "sqlite":
        return refresh_connection(pk, force=force)
    outcome: list[object] = []

    def refresh_in_own_transaction() -> None:
        try:
            if connections[alias].vendor == "postgresql":
                with connections[alias].cursor() as cursor:
                    cursor.execute("SET lock_timeout = '2s'")
            if ManychatConnection.objects.filter(pk=pk).exists():
                outcome.append(refresh_connection(pk, force=force))
            else:
                outcome.append(_NOT_VISIBLE)
        except Exception as exc:
            outcome.append(exc)
        finally:
            connections.close_all()

    helper = threading.Thread(target=refresh_in_own_transaction, name=f"manychat-refresh-{pk}")
    helper.start()
    helper.join()
    result = outcome[0]
    if result is _NOT_VISIBLE:
        return refresh_connection(pk, force=force)
    if isinstance(result, OperationalError):
        logger.warning("Connection %s is locked by the caller's transaction; refreshing inside it.", pk)
        return refresh_connection(pk, force=force)
    if isinstance(result, Exception):
        raise result
    assert isinstance(result, RefreshResult)
    return result


def lazy_wait_seconds() -> float:
    """How long a lazy caller waits for another worker's refresh: one HTTP timeout and a bit."""
    return app_settings.HTTP_TIMEOUT + 2.0


def _wait_for_lease(connection: ManychatConnection, deadline: float) -> bool:
    """Poll until the lease on ``connection`` is released (True) or ``deadline`` passes (False)."""
    while time.monotonic() < deadline:
        time.sleep(LAZY_POLL_SECONDS)
        connection.refresh_from_db()
        lease = connection.refresh_lease_until
        if lease is None or lease < timezone.now():
            return True
    return False


def _token_of(connection: ManychatConnection) -> str:
    if not connection.access_token:
        raise ConnectionNotActive(f"Connection {connection.pk} has no access token.")
    return str(connection.access_token)


def _valid_or_raise(connection: ManychatConnection, why: str) -> str:
    if connection.expires_at is None or connection.expires_at > timezone.now():
        return _token_of(connection)
    raise ProviderUnavailable(
        f"The access token of connection {connection.pk} expired and could not be refreshed ({why})."
    )


# -- Bulk refresh -----------------------------------------------------------


def due_candidates(
    *, margin: float | None = None, force: bool = False, connection_ids: Iterable[int] | None = None
) -> Any:
    """A queryset that is a superset of the due connections (checked row by row after)."""
    qs = ManychatConnection.objects.filter(
        status=ManychatConnection.Status.ACTIVE,
        auth_type=ManychatConnection.AuthType.OAUTH,
        refresh_token__isnull=False,
    )
    if connection_ids is not None:
        return qs.filter(pk__in=list(connection_ids))
    if force:
        return qs
    now = timezone.now()
    wanted = dt.timedelta(seconds=app_settings.REFRESH_MARGIN if margin is None else margin)
    return qs.filter(Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now)).filter(
        Q(expires_at__lte=now + wanted)
        | Q(expires_at__isnull=True, last_refreshed_at__isnull=True)
        | Q(expires_at__isnull=True, last_refreshed_at__lte=now - NO_EXPIRY_REFRESH_AFTER)
    )


def iter_due(
    *, margin: float | None = None, force: bool = False, connection_ids: Iterable[int] | None = None
) -> Iterator[tuple[ManychatConnection, str]]:
    """Yield ``(connection, reason)`` for each due connection, reading rows in chunks by pk.

    Only the fields that decide whether a row is due are loaded: no token is
    decrypted until a worker refreshes the row. Keyset pagination keeps memory
    flat and each query cheap at any table size.
    """
    qs = due_candidates(margin=margin, force=force, connection_ids=connection_ids).only(*DUE_FIELDS).order_by("pk")
    last_pk = 0
    while True:
        chunk = list(qs.filter(pk__gt=last_pk)[:CHUNK_SIZE])
        if not chunk:
            return
        now = timezone.now()
        for row in chunk:
            reason = due_reason(row, now=now, margin=margin)
            if reason is None and connection_ids is not None:
                reason = "requested by id"
            elif reason is None and force:
                reason = "--all (not due yet)"
            if reason:
                yield row, reason
        last_pk = chunk[-1].pk


def configuration_problem() -> str | None:
    """Why no refresh can succeed with the current settings, or ``None``."""
    missing = [
        name
        for name, value in (
            ("MANYCHAT_OAUTH_CLIENT_ID", app_settings.CLIENT_ID),
            ("MANYCHAT_OAUTH_CLIENT_SECRET", app_settings.CLIENT_SECRET),
        )
        if not value
    ]
    if missing:
        return f"{' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} not set."
    if not app_settings.TOKEN_URL.startswith(("http://", "https://")):
        return "MANYCHAT_OAUTH_TOKEN_URL is not an absolute http(s) URL."
    return None


def refresh_due_connections(
    *,
    margin: float | None = None,
    force: bool = False,
    connection_ids: Iterable[int] | None = None,
    concurrency: int = 8,
    on_result: Callable[[RefreshResult], None] | None = None,
) -> RefreshRun:
    """Refresh every due connection (or all, with ``force``) on ``concurrency`` threads.

    Stops early on a configuration error (``invalid_client``), since every
    other refresh would fail the same way.
    """
    run = RefreshRun()
    problem = configuration_problem()
    if problem:
        # A site without OAuth (API keys, App installs only) has nothing to
        # refresh: only a misconfiguration that would fail real work counts.
        if due_candidates(margin=margin, force=force, connection_ids=connection_ids).exists():
            run.config_error = problem
        return run
    started = timezone.now()
    explicit = connection_ids is not None
    work: queue.Queue[int | None] = queue.Queue(maxsize=max(1, concurrency) * 4)
    stop = threading.Event()

    def worker() -> None:
        try:
            while True:
                pk = work.get()
                if pk is None:
                    return
                if stop.is_set():
                    continue
                try:
                    result = refresh_connection(
                        pk, force=force or explicit, margin=margin, not_refreshed_since=started if force else None
                    )
                except Exception as exc:  # a database error must not stall the run
                    logger.exception("Unexpected error refreshing connection %s.", pk)
                    result = RefreshResult(pk, Outcome.FAILED, type(exc).__name__, "internal_error")
                run.add(result)
                if result.outcome is Outcome.CONFIG_ERROR:
                    stop.set()
                if on_result is not None:
                    try:
                        on_result(result)
                    except Exception:
                        logger.exception("The on_result callback failed.")
        finally:
            connections.close_all()

    threads = [
        threading.Thread(target=worker, name=f"manychat-refresh-{i}", daemon=True) for i in range(max(1, concurrency))
    ]
    for thread in threads:
        thread.start()
    try:
        for row, _reason in iter_due(margin=margin, force=force, connection_ids=connection_ids):
            if stop.is_set():
                break
            work.put(row.pk)
    finally:
        for _ in threads:
            work.put(None)
        for thread in threads:
            thread.join()
    return run
