"""Creating, updating and disconnecting connections, shared by every way in."""

from __future__ import annotations

import logging
from typing import Any

from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone
from django.views.decorators.debug import sensitive_variables

from .models import ManychatConnection
from .signals import connection_connected, connection_disconnected

logger = logging.getLogger(__name__)


@sensitive_variables()
def save_connection(
    user: Any,
    *,
    auth_type: str,
    access_token: str,
    refresh_token: str | None = None,
    token_type: str = "Bearer",
    scope: str = "",
    expires_at: Any = None,
    page: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
) -> tuple[ManychatConnection, bool]:
    """Create the user's connection to a page, or update it in place.

    Returns ``(connection, created)`` and sends ``connection_connected``. A
    connection whose page is unknown (``getInfo`` failed) gets its own row.
    """
    now = timezone.now()
    values: dict[str, Any] = {
        "auth_type": auth_type,
        "access_token": access_token,
        "refresh_token": refresh_token,
        "token_type": token_type or "Bearer",
        "scope": scope,
        "expires_at": expires_at,
        "status": ManychatConnection.Status.ACTIVE,
        "last_refreshed_at": now if auth_type == ManychatConnection.AuthType.OAUTH else None,
        "last_checked_at": now if page else None,
        "consecutive_failures": 0,
        "last_error": "",
        "next_attempt_at": None,
        "uninstall_suspected_at": None,
        "uninstall_signals": 0,
        **(page or {}),
        **(extra or {}),
    }
    page_id = values.get("page_id") or ""
    # A new credential: work started with the old one must not overwrite it.
    updated_values = {**values, "credentials_version": F("credentials_version") + 1}
    if page_id:
        try:
            with transaction.atomic():
                connection, created = ManychatConnection.objects.update_or_create(
                    user=user, page_id=page_id, defaults=updated_values, create_defaults=values
                )
        except IntegrityError:
            # Two requests connected the same page at once: the other one won
            # the insert, so update its row.
            connection, created = ManychatConnection.objects.update_or_create(
                user=user, page_id=page_id, defaults=updated_values, create_defaults=values
            )
        if not created:
            connection.refresh_from_db(fields=["credentials_version"])
    else:
        connection = ManychatConnection.objects.create(user=user, **values)
        created = True
    logger.info(
        "Connection %s %s (auth_type=%s, page_id=%s).",
        connection.pk,
        "created" if created else "updated",
        auth_type,
        page_id or "unknown",
    )
    connection_connected.send(sender=ManychatConnection, connection=connection, created=created)
    return connection, created


def disconnect(connection: ManychatConnection) -> None:
    """Forget the credentials and mark the connection disconnected."""
    connection.access_token = None
    connection.refresh_token = None
    connection.status = ManychatConnection.Status.DISCONNECTED
    connection.expires_at = None
    connection.next_attempt_at = None
    connection.credentials_version = F("credentials_version") + 1
    connection.save(
        update_fields=[
            "access_token",
            "refresh_token",
            "status",
            "expires_at",
            "next_attempt_at",
            "credentials_version",
            "updated_at",
        ]
    )
    connection.refresh_from_db(fields=["credentials_version"])
    logger.info("Connection %s disconnected.", connection.pk)
    connection_disconnected.send(sender=ManychatConnection, connection=connection)
