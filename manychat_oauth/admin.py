from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django.contrib import admin
from django.http import HttpRequest

from .models import ManychatConnection

if TYPE_CHECKING:
    ManychatConnectionAdminBase = admin.ModelAdmin[ManychatConnection]
else:
    ManychatConnectionAdminBase = admin.ModelAdmin


@admin.register(ManychatConnection)
class ManychatConnectionAdmin(ManychatConnectionAdminBase):
    list_display = ["__str__", "user", "page_id", "auth_type", "status", "expires_at", "last_refreshed_at"]
    list_filter = ["status", "auth_type"]
    list_select_related = ["user"]
    search_fields = ["user__username", "user__email", "page_name", "page_id"]
    # Tokens are never rendered: they are not in fields at all.
    exclude = ["access_token", "refresh_token"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        return [f.name for f in ManychatConnection._meta.fields if f.name not in self.exclude]
