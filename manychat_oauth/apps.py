from __future__ import annotations

from django.apps import AppConfig
from django.core import checks


class ManychatOAuthConfig(AppConfig):
    name = "manychat_oauth"
    verbose_name = "Manychat"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from . import checks as app_checks

        checks.register(app_checks.check_settings)
        checks.register(app_checks.check_sandbox)
        checks.register(app_checks.check_app_install, checks.Tags.urls)
        checks.register(app_checks.check_deploy, checks.Tags.security, deploy=True)
