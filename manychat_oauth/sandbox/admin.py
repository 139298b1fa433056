from __future__ import annotations

from typing import TYPE_CHECKING

from django.contrib import admin

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


@admin.register(SandboxApiKey)
class SandboxApiKeyAdmin(SandboxApiKeyAdminBase):
    list_display = ["page", "created_at", "revoked_at"]
    list_select_related = ["page"]


@admin.register(SandboxFault)
class SandboxFaultAdmin(SandboxFaultAdminBase):
    list_display = ["endpoint", "status_code", "latency_ms", "remaining", "created_at"]


@admin.register(SandboxAppInstall)
class SandboxAppInstallAdmin(SandboxAppInstallAdminBase):
    """Set "uninstalled at" to play an uninstall: calls with the key then answer 500 "exception"."""

    list_display = ["page", "app_id", "app_version", "installed_at", "uninstalled_at"]
    list_select_related = ["page"]
