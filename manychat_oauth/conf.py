"""App settings, read from ``django.conf.settings`` on every access.

Reading on every access (instead of once at import) keeps ``override_settings``
and pytest-django's ``settings`` fixture working, as in django-cors-headers.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings

DEFAULT_AUTHORIZE_URL = "https://manychat.com/oauth/authorize"
DEFAULT_TOKEN_URL = "https://manychat.com/oauth/token"
DEFAULT_API_BASE_URL = "https://api.manychat.com"
TOKEN_AUTH_METHODS = ("client_secret_post", "client_secret_basic")
DEFAULT_APP_INSTALL_SECRET_HEADER = "X-Install-Secret"
DEFAULT_APP_TOKEN_HEADER = "X-App-Token"


class Settings:
    """Typed accessors for every ``MANYCHAT_OAUTH_*`` setting."""

    @property
    def CLIENT_ID(self) -> str | None:
        return getattr(settings, "MANYCHAT_OAUTH_CLIENT_ID", None) or None

    @property
    def CLIENT_SECRET(self) -> str | None:
        return getattr(settings, "MANYCHAT_OAUTH_CLIENT_SECRET", None) or None

    @property
    def AUTHORIZE_URL(self) -> str:
        return str(getattr(settings, "MANYCHAT_OAUTH_AUTHORIZE_URL", DEFAULT_AUTHORIZE_URL))

    @property
    def TOKEN_URL(self) -> str:
        return str(getattr(settings, "MANYCHAT_OAUTH_TOKEN_URL", DEFAULT_TOKEN_URL))

    @property
    def API_BASE_URL(self) -> str:
        return str(getattr(settings, "MANYCHAT_OAUTH_API_BASE_URL", DEFAULT_API_BASE_URL))

    @property
    def REDIRECT_URI(self) -> str | None:
        return getattr(settings, "MANYCHAT_OAUTH_REDIRECT_URI", None) or None

    @property
    def SCOPES(self) -> list[str]:
        return list(getattr(settings, "MANYCHAT_OAUTH_SCOPES", []))

    @property
    def USE_PKCE(self) -> bool:
        return bool(getattr(settings, "MANYCHAT_OAUTH_USE_PKCE", True))

    @property
    def TOKEN_AUTH_METHOD(self) -> str:
        return str(getattr(settings, "MANYCHAT_OAUTH_TOKEN_AUTH_METHOD", "client_secret_post"))

    @property
    def HTTP_TIMEOUT(self) -> float:
        return float(getattr(settings, "MANYCHAT_OAUTH_HTTP_TIMEOUT", 10))

    @property
    def REFRESH_MARGIN(self) -> int:
        return int(getattr(settings, "MANYCHAT_OAUTH_REFRESH_MARGIN", 600))

    @property
    def STATE_MAX_AGE(self) -> int:
        return int(getattr(settings, "MANYCHAT_OAUTH_STATE_MAX_AGE", 600))

    @property
    def FERNET_KEYS(self) -> Any:
        """Raw value; validated by the system checks and by ``fields.get_fernet``."""
        return getattr(settings, "MANYCHAT_OAUTH_FERNET_KEYS", None)

    @property
    def CONNECTED_URL(self) -> str:
        return str(getattr(settings, "MANYCHAT_OAUTH_CONNECTED_URL", "manychat_oauth:connections"))

    @property
    def API_KEY_CHECK_INTERVAL(self) -> int:
        return int(getattr(settings, "MANYCHAT_OAUTH_API_KEY_CHECK_INTERVAL", 86400))

    @property
    def APP_INSTALL_SECRET(self) -> str | None:
        return getattr(settings, "MANYCHAT_OAUTH_APP_INSTALL_SECRET", None) or None

    @property
    def APP_INSTALL_URL(self) -> str | None:
        return getattr(settings, "MANYCHAT_OAUTH_APP_INSTALL_URL", None) or None

    @property
    def APP_INSTALL_SECRET_HEADER(self) -> str:
        return str(getattr(settings, "MANYCHAT_OAUTH_APP_INSTALL_SECRET_HEADER", DEFAULT_APP_INSTALL_SECRET_HEADER))

    @property
    def APP_TOKEN_HEADER(self) -> str:
        return str(getattr(settings, "MANYCHAT_OAUTH_APP_TOKEN_HEADER", DEFAULT_APP_TOKEN_HEADER))

    @property
    def APP_LINK_CODE_MAX_AGE(self) -> int:
        return int(getattr(settings, "MANYCHAT_OAUTH_APP_LINK_CODE_MAX_AGE", 1800))

    @property
    def APP_UNINSTALL_AFTER(self) -> int:
        return int(getattr(settings, "MANYCHAT_OAUTH_APP_UNINSTALL_AFTER", 3600))


app_settings = Settings()
