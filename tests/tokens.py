"""Helpers for the refresh tests: connections holding tokens the sandbox issued."""

from __future__ import annotations

import datetime as dt
import secrets
from typing import Any

from django.utils import timezone

from manychat_oauth.models import ManychatConnection
from manychat_oauth.sandbox.models import SandboxPage, SandboxToken
from manychat_oauth.sandbox.views import default_page


def issue_tokens(page: SandboxPage | None = None, *, client_id: str = "test-client") -> SandboxToken:
    """A token pair as the sandbox issues it after a consent (stored in its tables)."""
    return SandboxToken.objects.create(
        page=page or default_page(),
        client_id=client_id,
        access_token="sbx_at_" + secrets.token_urlsafe(32),
        refresh_token="sbx_rt_" + secrets.token_urlsafe(32),
        expires_at=timezone.now() + dt.timedelta(hours=1),
    )


def make_connection(
    user: Any,
    *,
    expires_in: float | None = 60,
    refreshed_ago: float | None = 3600,
    page_id: str | None = None,
    **fields: Any,
) -> ManychatConnection:
    """An active OAuth connection whose tokens the sandbox knows.

    ``expires_in`` / ``refreshed_ago`` are seconds from now (``None``: not set).
    """
    now = timezone.now()
    issued = issue_tokens()
    values: dict[str, Any] = {
        "user": user,
        "auth_type": ManychatConnection.AuthType.OAUTH,
        "page_id": page_id or secrets.token_hex(6),
        "access_token": issued.access_token,
        "refresh_token": issued.refresh_token,
        "expires_at": None if expires_in is None else now + dt.timedelta(seconds=expires_in),
        "last_refreshed_at": None if refreshed_ago is None else now - dt.timedelta(seconds=refreshed_ago),
    }
    values.update(fields)
    return ManychatConnection.objects.create(**values)


def sandbox_token(connection: ManychatConnection) -> SandboxToken:
    """The sandbox's record of the refresh token ``connection`` stores now."""
    connection.refresh_from_db()
    return SandboxToken.objects.get(refresh_token=connection.refresh_token)


def token_requests_seen(fault: Any) -> int:
    """How many token requests a counting fault (``times=COUNTER``) has seen."""
    fault.refresh_from_db()
    return int(COUNTER - fault.remaining)


#: Uses given to a fault that only counts requests (no status, no latency).
COUNTER = 100_000
