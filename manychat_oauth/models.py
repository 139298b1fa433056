"""The one model: a site user's connection to a Manychat page."""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from .fields import EncryptedTextField


class ManychatConnectionQuerySet(models.QuerySet["ManychatConnection"]):
    def active(self) -> ManychatConnectionQuerySet:
        return self.filter(status=ManychatConnection.Status.ACTIVE)

    def for_user(self, user: Any) -> ManychatConnectionQuerySet:
        return self.filter(user=user)


class ManychatConnection(models.Model):
    """A user's credentials for one Manychat page, encrypted at rest.

    One row per (user, page): connecting the same page again updates the row.
    """

    class AuthType(models.TextChoices):
        OAUTH = "oauth", _("OAuth")
        API_KEY = "api_key", _("API key")
        APP = "app", _("App install")

    class Status(models.TextChoices):
        ACTIVE = "active", _("Active")
        REAUTH_REQUIRED = "reauth_required", _("Needs re-authorization")
        DISCONNECTED = "disconnected", _("Disconnected")

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.CASCADE,
        related_name="manychat_connections",
    )
    auth_type = models.CharField(max_length=16, choices=AuthType.choices, default=AuthType.OAUTH)
    page_id = models.CharField(max_length=64, blank=True, db_index=True)
    page_name = models.CharField(max_length=255, blank=True)
    page_username = models.CharField(max_length=255, blank=True)
    page_category = models.CharField(max_length=255, blank=True)
    page_avatar_url = models.URLField(max_length=1000, blank=True)
    page_timezone = models.CharField(max_length=64, blank=True)
    page_is_pro = models.BooleanField(null=True, blank=True)

    access_token = EncryptedTextField(null=True, blank=True)
    refresh_token = EncryptedTextField(null=True, blank=True)
    token_type = models.CharField(max_length=32, default="Bearer")
    scope = models.TextField(blank=True)
    expires_at = models.DateTimeField(null=True, blank=True)

    status = models.CharField(max_length=20, choices=Status.choices, default=Status.ACTIVE)
    last_refreshed_at = models.DateTimeField(null=True, blank=True)
    last_checked_at = models.DateTimeField(null=True, blank=True)
    consecutive_failures = models.PositiveIntegerField(default=0)
    last_error = models.CharField(max_length=255, blank=True)
    next_attempt_at = models.DateTimeField(null=True, blank=True)

    # A short lease taken with one conditional UPDATE before a refresh, so that
    # one worker at a time refreshes a connection (see refresh.py).
    refresh_lease_until = models.DateTimeField(null=True, blank=True, editable=False)
    refresh_lease_owner = models.CharField(max_length=64, blank=True, editable=False)
    # Bumped whenever the user connects again or disconnects: a refresh or a
    # health check that started with the old credential must not overwrite
    # the new one (or mark it broken) when it finishes.
    credentials_version = models.PositiveIntegerField(default=0, editable=False)

    # App Store installs (auth_type "app").
    app_id = models.CharField(max_length=64, blank=True)
    app_version = models.CharField(max_length=32, blank=True)
    uninstall_suspected_at = models.DateTimeField(null=True, blank=True)
    uninstall_signals = models.PositiveIntegerField(default=0)

    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = ManychatConnectionQuerySet.as_manager()

    class Meta:
        verbose_name = _("Manychat connection")
        verbose_name_plural = _("Manychat connections")
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["user", "page_id"],
                condition=~Q(page_id=""),
                name="manychat_oauth_one_connection_per_user_page",
            )
        ]
        indexes = [
            models.Index(fields=["status", "auth_type", "expires_at"], name="manychat_oauth_due_idx"),
        ]

    def __str__(self) -> str:
        page = self.page_name or self.page_id or _("unknown page")
        return f"{page} ({self.get_auth_type_display()}, {self.get_status_display()})"

    def __repr__(self) -> str:
        return (
            f"<ManychatConnection pk={self.pk} user_id={self.user_id} page_id={self.page_id!r} "
            f"auth_type={self.auth_type!r} status={self.status!r}>"
        )

    def get_access_token(self) -> str:
        """A valid access token (or API key), refreshing it first when it is due.

        Raises ``ConnectionNotActive`` when the user must connect again, and
        ``ProviderUnavailable`` when the token expired and cannot be refreshed now.
        """
        from .refresh import get_access_token

        return get_access_token(self)

    @property
    def is_active(self) -> bool:
        return self.status == self.Status.ACTIVE

    @property
    def is_expired(self) -> bool:
        return self.expires_at is not None and self.expires_at <= timezone.now()

    @property
    def expires_in(self) -> dt.timedelta | None:
        return None if self.expires_at is None else self.expires_at - timezone.now()


class ManychatLinkCode(models.Model):
    """A short, single-use, expiring code that ties an App Store install to a site user.

    The user reads it on the connections page and types it into the app's
    install settings in Manychat, which sends it to the install endpoint. Only
    a keyed hash of the code is stored.
    """

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.CASCADE,
        related_name="manychat_link_codes",
    )
    code_hash = models.CharField(max_length=64, unique=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField(db_index=True)
    used_at = models.DateTimeField(null=True, blank=True)
    #: The connection the code created or updated (answers replays of the same install).
    connection = models.ForeignKey(
        ManychatConnection, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        verbose_name = _("Manychat link code")
        verbose_name_plural = _("Manychat link codes")
        ordering = ["-created_at"]

    def __str__(self) -> str:
        state = "used" if self.used_at else ("expired" if self.is_expired else "valid")
        return f"Link code for user {self.user_id} ({state})"

    def __repr__(self) -> str:
        return f"<ManychatLinkCode pk={self.pk} user_id={self.user_id} used={self.used_at is not None}>"

    @property
    def is_expired(self) -> bool:
        return self.expires_at <= timezone.now()
