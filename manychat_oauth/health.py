"""Health checks: ask Manychat whether a connection's credential still works.

Used by ``manychat_refresh_tokens`` for API-key and App connections, and by
the admin's "Check connection" action.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from django.db.models import F, Q, QuerySet
from django.utils import timezone

from . import api
from .conf import app_settings
from .exceptions import ManychatAuthError, ManychatOAuthError, ProviderUnavailable
from .models import ManychatConnection
from .signals import reauth_required

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class CheckResult:
    connection_id: int
    ok: bool
    status: str
    error_code: str = ""
    message: str = ""


def check_connection(connection: ManychatConnection) -> CheckResult:
    """Call ``getInfo`` with the connection's credential and record what it says."""
    if connection.status != ManychatConnection.Status.ACTIVE:
        # Keep the reason it stopped (e.g. "app uninstalled") rather than
        # overwrite it with the failure of a check that cannot succeed.
        return CheckResult(connection.pk, False, connection.status, "not_active", "The connection is not active.")
    now = timezone.now()
    try:
        info = api.get_page_info(connection.get_access_token())
    except ManychatAuthError as exc:
        return _mark_reauth(connection, exc)
    except ManychatOAuthError as exc:
        uninstall_signal = isinstance(exc, ProviderUnavailable) and record_uninstall_signal(connection, exc)
        if not uninstall_signal:
            _record(connection, last_checked_at=now, last_error=f"{exc.code}: check failed")
        return CheckResult(connection.pk, False, connection.status, exc.code, str(exc))
    fields = api.page_fields(info)
    if connection.page_id and fields["page_id"] != connection.page_id:
        # The credential now belongs to another page: keep our page id.
        fields.pop("page_id")
    elif not connection.page_id and _page_taken(connection, fields["page_id"]):
        # Saved without page details (getInfo failed while connecting), and the
        # user has another row for that page: leave the page id empty rather
        # than break the one-row-per-page constraint.
        fields.pop("page_id")
    _record(connection, last_checked_at=now, last_error="", **fields)
    clear_uninstall_signal(connection)
    return CheckResult(connection.pk, True, connection.status)


def _page_taken(connection: ManychatConnection, page_id: str) -> bool:
    return (
        ManychatConnection.objects.filter(user_id=connection.user_id, page_id=page_id)
        .exclude(pk=connection.pk)
        .exists()
    )


def _mark_reauth(connection: ManychatConnection, exc: ManychatOAuthError) -> CheckResult:
    if connection.auth_type == ManychatConnection.AuthType.OAUTH:
        # An OAuth token refused once is refreshed by the client; the refresh
        # engine decides about re-authorization.
        _record(connection, last_checked_at=timezone.now(), last_error=f"{exc.code}: token refused")
        return CheckResult(connection.pk, False, connection.status, exc.code, str(exc))
    marked = _record(
        connection,
        status=ManychatConnection.Status.REAUTH_REQUIRED,
        last_checked_at=timezone.now(),
        last_error=f"{exc.code}: Manychat refused the key; connect the page again.",
    )
    if marked:
        logger.warning("Connection %s: Manychat refused the key (%s).", connection.pk, exc.code)
        reauth_required.send(sender=ManychatConnection, connection=connection)
    return CheckResult(connection.pk, False, connection.status, exc.code, str(exc))


def _record(connection: ManychatConnection, **values: Any) -> bool:
    """Write ``values`` unless the user connected again (or disconnected) since ``connection`` was read.

    A check that started with the old credential says nothing about the new one.
    """
    updated = ManychatConnection.objects.filter(
        pk=connection.pk, credentials_version=connection.credentials_version
    ).update(**values, updated_at=timezone.now())
    if updated:
        for name, value in values.items():
            setattr(connection, name, value)
    else:
        logger.info("Connection %s changed credentials during its check; the result was dropped.", connection.pk)
        connection.refresh_from_db()
    return bool(updated)


# -- App uninstall detection --------------------------------------------------
#
# Manychat answers calls made with the key of an uninstalled app with HTTP 500
# {"status": "exception", "message": "Something went wrong"}. A Manychat
# outage can answer the same, so one such answer is a signal, not proof: the
# connection becomes reauth_required ("app uninstalled") only when the signal
# has been seen at least UNINSTALL_MIN_SIGNALS times, the first and the latest
# at least MANYCHAT_OAUTH_APP_UNINSTALL_AFTER seconds (default one hour) apart,
# with no successful call in between (a success clears the suspicion).

#: Signals needed (besides the time span) before an App connection is declared uninstalled.
UNINSTALL_MIN_SIGNALS = 2


def record_uninstall_signal(connection: ManychatConnection, exc: ProviderUnavailable) -> bool:
    """Count an "uninstalled app" answer for an App connection; ``False`` if it is not one.

    Marks the connection ``reauth_required`` (and sends ``reauth_required``)
    once the rule above is met.
    """
    if connection.auth_type != ManychatConnection.AuthType.APP or exc.code != "api_exception":
        return False
    now = timezone.now()
    # Only the credential that was refused: not one the user installed since.
    rows = ManychatConnection.objects.filter(pk=connection.pk, credentials_version=connection.credentials_version)
    # Two conditional UPDATEs, so that concurrent checks count every signal once.
    rows.filter(uninstall_suspected_at__isnull=True).update(uninstall_suspected_at=now)
    if not rows.update(uninstall_signals=F("uninstall_signals") + 1, last_checked_at=now, updated_at=now):
        return True  # installed again meanwhile: the signal was about the old key
    connection.refresh_from_db(fields=["uninstall_suspected_at", "uninstall_signals", "status"])
    since = connection.uninstall_suspected_at or now
    span = now - since
    if connection.uninstall_signals < UNINSTALL_MIN_SIGNALS or span.total_seconds() < app_settings.APP_UNINSTALL_AFTER:
        _record(
            connection,
            last_error=(
                f"{exc.code}: possible app uninstall (signal {connection.uninstall_signals} "
                f"since {since:%Y-%m-%d %H:%M} UTC); not confirmed yet."
            ),
        )
        logger.info(
            "Connection %s: Manychat answered like an uninstalled app (signal %s).",
            connection.pk,
            connection.uninstall_signals,
        )
        return True
    marked = rows.filter(status=ManychatConnection.Status.ACTIVE).update(
        status=ManychatConnection.Status.REAUTH_REQUIRED,
        last_error="app uninstalled: install the app in Manychat again to reconnect the page.",
        updated_at=now,
    )
    connection.refresh_from_db(fields=["status", "last_error"])
    if marked:
        logger.warning(
            "Connection %s: app uninstalled (%s signals over %s).", connection.pk, connection.uninstall_signals, span
        )
        reauth_required.send(sender=ManychatConnection, connection=connection)
    return True


def clear_uninstall_signal(connection: ManychatConnection) -> None:
    """A successful call: forget any uninstall suspicion."""
    if connection.uninstall_suspected_at is None and not connection.uninstall_signals:
        return
    logger.info("Connection %s answered again; uninstall suspicion cleared.", connection.pk)
    _record(connection, uninstall_suspected_at=None, uninstall_signals=0)


def record_refused_credential(connection: ManychatConnection, exc: ManychatOAuthError) -> CheckResult:
    """Manychat refused the credential: API-key and App connections need the user again."""
    return _mark_reauth(connection, exc)


# -- Periodic checks (``manychat_refresh_tokens``) ---------------------------

#: Connections whose credential cannot be refreshed, only checked.
CHECKED_AUTH_TYPES = (ManychatConnection.AuthType.API_KEY, ManychatConnection.AuthType.APP)
#: Rows read per query when selecting connections to check.
CHECK_CHUNK_SIZE = 500


@dataclass
class CheckRun:
    """Counts for a run of health checks, plus the results that were not successes."""

    checked: int = 0
    key_rejected: int = 0
    check_failed: int = 0
    problems: list[CheckResult] = field(default_factory=list)

    MAX_PROBLEMS = 100

    def add(self, result: CheckResult) -> None:
        self.checked += 1
        if result.ok:
            return
        if result.status == ManychatConnection.Status.REAUTH_REQUIRED:
            self.key_rejected += 1
        else:
            self.check_failed += 1
        if len(self.problems) < self.MAX_PROBLEMS:
            self.problems.append(result)

    @property
    def exit_code(self) -> int:
        return 1 if self.key_rejected or self.check_failed else 0

    def summary(self) -> str:
        return f"checked={self.checked} key_rejected={self.key_rejected} check_failed={self.check_failed}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "checked": self.checked,
            "key_rejected": self.key_rejected,
            "check_failed": self.check_failed,
            "problems": [{"connection_id": r.connection_id, "error": r.error_code} for r in self.problems],
        }


def check_candidates(
    *, now: dt.datetime, interval: float | None = None, force: bool = False, connection_ids: Iterable[int] | None = None
) -> QuerySet[ManychatConnection]:
    """Active API-key and App connections not checked for ``interval`` seconds (or all, with ``force``)."""
    qs = ManychatConnection.objects.filter(status=ManychatConnection.Status.ACTIVE, auth_type__in=CHECKED_AUTH_TYPES)
    if connection_ids is not None:
        return qs.filter(pk__in=list(connection_ids))
    if force:
        return qs
    seconds = app_settings.API_KEY_CHECK_INTERVAL if interval is None else interval
    cutoff = now - dt.timedelta(seconds=seconds)
    return qs.filter(Q(last_checked_at__isnull=True) | Q(last_checked_at__lte=cutoff))


def check_due_connections(
    *, interval: float | None = None, force: bool = False, connection_ids: Iterable[int] | None = None
) -> CheckRun:
    """Check every API-key and App connection due for a check, at most once per
    ``MANYCHAT_OAUTH_API_KEY_CHECK_INTERVAL``, and record what Manychat says."""
    run = CheckRun()
    for row in _iter_claimed(
        check_candidates(now=timezone.now(), interval=interval, force=force, connection_ids=connection_ids)
    ):
        run.add(check_connection(row))
    return run


def _iter_claimed(qs: QuerySet[ManychatConnection]) -> Iterator[ManychatConnection]:
    """Yield the rows of ``qs`` this process claimed, reading them in chunks by pk.

    Claiming moves ``last_checked_at`` with one conditional UPDATE, so runs on
    several hosts at once check each connection once.
    """
    light = qs.only("pk", "last_checked_at").order_by("pk")
    last_pk = 0
    while True:
        chunk = list(light.filter(pk__gt=last_pk)[:CHECK_CHUNK_SIZE])
        if not chunk:
            return
        for row in chunk:
            seen = row.last_checked_at
            claim = ManychatConnection.objects.filter(pk=row.pk)
            claim = claim.filter(last_checked_at__isnull=True) if seen is None else claim.filter(last_checked_at=seen)
            if claim.update(last_checked_at=timezone.now()):
                connection = ManychatConnection.objects.filter(pk=row.pk).first()
                if connection is not None and connection.is_active:
                    yield connection
        last_pk = chunk[-1].pk
