"""The sandbox's state, in the database so that several processes share it."""

from __future__ import annotations

from django.db import models


class SandboxPage(models.Model):
    page_id = models.CharField(max_length=64, unique=True)
    name = models.CharField(max_length=255)
    category = models.CharField(max_length=255, default="Local business")
    username = models.CharField(max_length=255, blank=True)
    is_pro = models.BooleanField(default=True)
    timezone = models.CharField(max_length=64, default="UTC")
    avatar_link = models.URLField(blank=True)

    def __str__(self) -> str:
        return f"{self.name} ({self.page_id})"

    def as_info(self) -> dict[str, object]:
        """The page as ``fb/page/getInfo`` describes it."""
        return {
            "id": int(self.page_id) if self.page_id.isdigit() else self.page_id,
            "name": self.name,
            "category": self.category,
            "avatar_link": self.avatar_link,
            "username": self.username,
            "about": "",
            "description": "",
            "is_pro": self.is_pro,
            "timezone": self.timezone,
        }


class SandboxAuthorizationCode(models.Model):
    code = models.CharField(max_length=128, unique=True)
    page = models.ForeignKey(SandboxPage, on_delete=models.CASCADE)
    client_id = models.CharField(max_length=255)
    redirect_uri = models.TextField()
    scope = models.TextField(blank=True)
    code_challenge = models.CharField(max_length=128, blank=True)
    code_challenge_method = models.CharField(max_length=16, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    used_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"Authorization code for {self.page_id} ({'used' if self.used_at else 'unused'})"


class SandboxToken(models.Model):
    """One issued token pair. A refresh token is single-use (rotation)."""

    page = models.ForeignKey(SandboxPage, on_delete=models.CASCADE)
    client_id = models.CharField(max_length=255)
    access_token = models.CharField(max_length=128, unique=True)
    refresh_token = models.CharField(max_length=128, unique=True, null=True, blank=True)
    scope = models.TextField(blank=True)
    expires_at = models.DateTimeField()
    created_at = models.DateTimeField(auto_now_add=True)
    #: When the refresh token was exchanged (it cannot be used again).
    rotated_at = models.DateTimeField(null=True, blank=True)
    #: Every presentation of the refresh token, the rejected ones included.
    refresh_uses = models.PositiveIntegerField(default=0)
    revoked = models.BooleanField(default=False)
    parent = models.ForeignKey("self", null=True, blank=True, on_delete=models.SET_NULL)

    def __str__(self) -> str:
        return f"Token for page {self.page_id}, expires {self.expires_at:%Y-%m-%d %H:%M}"


class SandboxApiKey(models.Model):
    """A page API key as Manychat issues them (Settings → API): ``<digits>:<alnum>``."""

    page = models.ForeignKey(SandboxPage, on_delete=models.CASCADE)
    key = models.CharField(max_length=128, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"API key for {self.page} ({'revoked' if self.revoked_at else 'active'})"


class SandboxAppInstall(models.Model):
    """An installation of a Manychat App Store app on a sandbox page, with its App Key."""

    page = models.ForeignKey(SandboxPage, on_delete=models.CASCADE)
    app_id = models.CharField(max_length=64, default="sandbox-app")
    app_version = models.CharField(max_length=32, default="1")
    key = models.CharField(max_length=128, unique=True)
    installed_at = models.DateTimeField(auto_now_add=True)
    #: Calls with the key of an uninstalled app answer 500 {"status": "exception"}.
    uninstalled_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"App {self.app_id} on {self.page} ({'uninstalled' if self.uninstalled_at else 'installed'})"


class SandboxFault(models.Model):
    """A fault the sandbox injects into matching requests, for tests and benchmarks."""

    class Endpoint(models.TextChoices):
        ANY = "*", "Any endpoint"
        AUTHORIZE = "authorize", "oauth/authorize"
        TOKEN = "token", "oauth/token"
        GET_INFO = "getinfo", "fb/page/getInfo"

    endpoint = models.CharField(max_length=16, choices=Endpoint.choices, default=Endpoint.ANY)
    #: Answer with this status instead of handling the request (None: handle it).
    status_code = models.PositiveIntegerField(null=True, blank=True)
    body = models.TextField(blank=True)
    content_type = models.CharField(max_length=100, default="application/json")
    retry_after = models.CharField(max_length=64, blank=True)
    latency_ms = models.PositiveIntegerField(default=0)
    #: Sleep after handling the request instead of before (the work is done
    #: even if the client gives up: an "ambiguous" timeout).
    latency_after = models.BooleanField(default=False)
    #: Send the body in small pieces with this pause between them (a slow
    #: body: the status line, headers and first piece arrive at once).
    chunk_delay_ms = models.PositiveIntegerField(default=0)
    #: How many more requests this fault applies to (None: until cleared).
    remaining = models.PositiveIntegerField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        what = f"HTTP {self.status_code}" if self.status_code else "no status change"
        return f"{self.get_endpoint_display()}: {what}, {self.latency_ms} ms"
