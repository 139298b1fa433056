"""Connections that are due for refresh, holding real sandbox-issued tokens."""

from __future__ import annotations

import datetime as dt
import secrets
from typing import Any

from django.utils import timezone

from manychat_oauth.models import ManychatConnection
from manychat_oauth.sandbox.models import SandboxPage, SandboxToken


def make_connections(user: Any, count: int, *, expires_in: dt.timedelta = dt.timedelta(minutes=-1)) -> list[int]:
    """``count`` OAuth connections of ``user`` whose tokens the sandbox issued; return their ids.

    The default expiry is in the past, so every connection is due.
    """
    now = timezone.now()
    start = SandboxPage.objects.count()
    pages = SandboxPage.objects.bulk_create(
        SandboxPage(page_id=str(2_000_000 + start + i), name=f"Page {start + i}") for i in range(count)
    )
    tokens = SandboxToken.objects.bulk_create(
        SandboxToken(
            page=page,
            client_id="test-client",
            access_token="sbx_at_" + secrets.token_urlsafe(32),
            refresh_token="sbx_rt_" + secrets.token_urlsafe(32),
            expires_at=now + expires_in,
        )
        for page in pages
    )
    connections = ManychatConnection.objects.bulk_create(
        ManychatConnection(
            user=user,
            page_id=page.page_id,
            page_name=page.name,
            access_token=token.access_token,
            refresh_token=token.refresh_token,
            expires_at=token.expires_at,
            last_refreshed_at=now - dt.timedelta(hours=1),
        )
        for page, token in zip(pages, tokens, strict=True)
    )
    return [c.pk for c in connections]


def stored_refresh_token_is_current(connection: ManychatConnection) -> bool:
    """The connection holds the newest refresh token of its chain (not rotated, not lost)."""
    return SandboxToken.objects.filter(refresh_token=connection.refresh_token, rotated_at__isnull=True).exists()
