from __future__ import annotations

from typing import TYPE_CHECKING

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils import timezone

from .accounts import create_api_key
from .models import SandboxApiKey, SandboxAppInstall, SandboxFault, SandboxPage

if TYPE_CHECKING:
    SandboxPageAdminBase = admin.ModelAdmin[SandboxPage]
    SandboxApiKeyAdminBase = admin.ModelAdmin[SandboxApiKey]
    SandboxFaultAdminBase = admin.ModelAdmin[SandboxFault]
    SandboxAppInstallAdminBase = admin.ModelAdmin[SandboxAppInstall]
else:
    SandboxPageAdminBase = admin.ModelAdmin
    SandboxApiKeyAdminBase = admin.ModelAdmin
    SandboxFaultAdminBase = admin.ModelAdmin
    SandboxAppInstallAdminBase = admin.ModelAdmin


@admin.register(SandboxPage)
class SandboxPageAdmin(SandboxPageAdminBase):
    list_display = ["name", "page_id", "category", "is_pro"]
    search_fields = ["name", "page_id"]
    actions = ["create_api_keys"]

    @admin.action(description="Create a page API key (shown once)")
    def create_api_keys(self, request: HttpRequest, queryset: QuerySet[SandboxPage]) -> None:
        for page in queryset:
            # A sandbox key is fake, and Manychat too shows a new key to its owner once.
            self.message_user(request, f"API key for {page.name}: {create_api_key(page).key}", messages.SUCCESS)


@admin.register(SandboxApiKey)
class SandboxApiKeyAdmin(SandboxApiKeyAdminBase):
    list_display = ["page", "created_at", "revoked_at"]
    list_select_related = ["page"]
    list_filter = ["revoked_at"]
    exclude = ["key"]
    readonly_fields = ["page", "created_at", "revoked_at"]
    actions = ["revoke"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        # Keys are generated (action on a page, or `manychat_sandbox create-api-key`), never typed in.
        return False

    @admin.action(description="Revoke the selected API keys")
    def revoke(self, request: HttpRequest, queryset: QuerySet[SandboxApiKey]) -> None:
        revoked = queryset.filter(revoked_at__isnull=True).update(revoked_at=timezone.now())
        self.message_user(request, f"Revoked {revoked} API key(s).", messages.SUCCESS)


@admin.register(SandboxFault)
class SandboxFaultAdmin(SandboxFaultAdminBase):
    list_display = ["endpoint", "status_code", "latency_ms", "remaining", "created_at"]


@admin.register(SandboxAppInstall)
class SandboxAppInstallAdmin(SandboxAppInstallAdminBase):
    """Set "uninstalled at" to play an uninstall: calls with the key then answer 500 "exception"."""

    list_display = ["page", "app_id", "app_version", "installed_at", "uninstalled_at"]
    list_select_related = ["page"]
