from __future__ import annotations

from django.apps import AppConfig


class SandboxConfig(AppConfig):
    name = "manychat_oauth.sandbox"
    label = "manychat_sandbox"
    verbose_name = "Manychat sandbox"
    default_auto_field = "django.db.models.BigAutoField"
