"""Health checks: ask Manychat whether a connection's credential still works.

Used by ``manychat_refresh_tokens`` for API-key and App connections, and by
the admin's "Check connection" action.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from django.utils import timezone

from . import api
from .exceptions import ManychatAPIError, ManychatAuthError, ManychatOAuthError
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
    now = timezone.now()
    try:
        info = api.get_page_info(connection.get_access_token())
    except ManychatAuthError as exc:
        return _mark_reauth(connection, exc)
    except ManychatAPIError as exc:
        _record(connection, last_checked_at=now, last_error=f"{exc.code}: check failed")
        return CheckResult(connection.pk, False, connection.status, exc.code, str(exc))
    except ManychatOAuthError as exc:
        _record(connection, last_checked_at=now, last_error=f"{exc.code}: check failed")
        return CheckResult(connection.pk, False, connection.status, exc.code, str(exc))
    fields = api.page_fields(info)
    if connection.page_id and fields["page_id"] != connection.page_id:
        # The credential now belongs to another page: keep our page id.
        fields.pop("page_id")
    _record(connection, last_checked_at=now, last_error="", **fields)
    return CheckResult(connection.pk, True, connection.status)


def _mark_reauth(connection: ManychatConnection, exc: ManychatOAuthError) -> CheckResult:
    if connection.auth_type == ManychatConnection.AuthType.OAUTH:
        # An OAuth token refused once is refreshed by the client; the refresh
        # engine decides about re-authorization.
        _record(connection, last_checked_at=timezone.now(), last_error=f"{exc.code}: token refused")
        return CheckResult(connection.pk, False, connection.status, exc.code, str(exc))
    _record(
        connection,
        status=ManychatConnection.Status.REAUTH_REQUIRED,
        last_checked_at=timezone.now(),
        last_error=f"{exc.code}: Manychat refused the key; connect the page again.",
    )
    logger.warning("Connection %s: Manychat refused the key (%s).", connection.pk, exc.code)
    reauth_required.send(sender=ManychatConnection, connection=connection)
    return CheckResult(connection.pk, False, connection.status, exc.code, str(exc))


def _record(connection: ManychatConnection, **values: object) -> None:
    for name, value in values.items():
        setattr(connection, name, value)
    connection.save(update_fields=[*values, "updated_at"])
