"""System checks. Ids are stable and listed in the README."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

from django.apps import apps
from django.conf import settings
from django.core.checks import CheckMessage, Error, Warning
from django.urls import NoReverseMatch, reverse

from .conf import TOKEN_AUTH_METHODS, app_settings
from .fields import validate_fernet_key

SILENCE_HINT = " If this site only connects with API keys or App installs, silence it with SILENCED_SYSTEM_CHECKS."


def check_settings(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    errors: list[CheckMessage] = []
    if not app_settings.CLIENT_ID:
        errors.append(
            Error(
                "MANYCHAT_OAUTH_CLIENT_ID is not set.",
                hint="Add it to your settings or environment (the client id of your Manychat app)." + SILENCE_HINT,
                id="manychat_oauth.E001",
            )
        )
    if not app_settings.CLIENT_SECRET:
        errors.append(
            Error(
                "MANYCHAT_OAUTH_CLIENT_SECRET is not set.",
                hint="Add it to your settings or environment; keep it out of version control." + SILENCE_HINT,
                id="manychat_oauth.E002",
            )
        )
    errors.extend(_check_fernet_keys())
    if app_settings.TOKEN_AUTH_METHOD not in TOKEN_AUTH_METHODS:
        errors.append(
            Error(
                f"MANYCHAT_OAUTH_TOKEN_AUTH_METHOD is {app_settings.TOKEN_AUTH_METHOD!r}.",
                hint="Use 'client_secret_post' (the default) or 'client_secret_basic'.",
                id="manychat_oauth.E004",
            )
        )
    errors.extend(_check_numbers())
    scopes = getattr(settings, "MANYCHAT_OAUTH_SCOPES", [])
    if isinstance(scopes, str) or not isinstance(scopes, Sequence):
        errors.append(
            Error(
                "MANYCHAT_OAUTH_SCOPES must be a list of strings.",
                hint='For example MANYCHAT_OAUTH_SCOPES = ["page:read"].',
                id="manychat_oauth.E006",
            )
        )
    for name in ("AUTHORIZE_URL", "TOKEN_URL", "API_BASE_URL"):
        url = getattr(app_settings, name)
        if urlsplit(url).scheme not in ("http", "https") or not urlsplit(url).netloc:
            errors.append(
                Error(
                    f"MANYCHAT_OAUTH_{name} is not an absolute http(s) URL.",
                    hint="Set it to a full URL such as https://manychat.com/oauth/token, or remove it for the default.",
                    id="manychat_oauth.E007",
                )
            )
    return errors


def _check_fernet_keys() -> list[CheckMessage]:
    raw = app_settings.FERNET_KEYS
    if not raw:
        return []
    hint = (
        "Set MANYCHAT_OAUTH_FERNET_KEYS to a list of keys, newest first, each made with "
        "cryptography.fernet.Fernet.generate_key()."
    )
    if isinstance(raw, str | bytes) or not isinstance(raw, Sequence):
        return [
            Error(
                "MANYCHAT_OAUTH_FERNET_KEYS must be a list, not a single string.", hint=hint, id="manychat_oauth.E003"
            )
        ]
    errors: list[CheckMessage] = []
    for position, key in enumerate(raw, start=1):
        try:
            validate_fernet_key(key)
        except ValueError as exc:
            # The message names the position and the problem, never the key.
            errors.append(
                Error(
                    f"MANYCHAT_OAUTH_FERNET_KEYS item {position} is not a valid Fernet key: {exc}.",
                    hint=hint,
                    id="manychat_oauth.E003",
                )
            )
    return errors


def _check_numbers() -> list[CheckMessage]:
    errors: list[CheckMessage] = []
    for name, minimum in (
        ("HTTP_TIMEOUT", 0.001),
        ("REFRESH_MARGIN", 0),
        ("STATE_MAX_AGE", 1),
        ("API_KEY_CHECK_INTERVAL", 1),
        ("APP_LINK_CODE_MAX_AGE", 60),
        ("APP_UNINSTALL_AFTER", 0),
    ):
        try:
            value = float(getattr(app_settings, name))
        except (TypeError, ValueError):
            value = None
        if value is None or value < minimum:
            errors.append(
                Error(
                    f"MANYCHAT_OAUTH_{name} must be a number of seconds of at least {minimum:g}.",
                    hint=f"Fix MANYCHAT_OAUTH_{name} or remove it to use the default.",
                    id="manychat_oauth.E005",
                )
            )
    return errors


def check_sandbox(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    if apps.is_installed("manychat_oauth.sandbox") and not settings.DEBUG:
        return [
            Warning(
                "The Manychat sandbox (manychat_oauth.sandbox) is installed while DEBUG is off.",
                hint="The sandbox hands out tokens to anyone: remove it from INSTALLED_APPS and its URLs in production.",
                id="manychat_oauth.W003",
            )
        ]
    return []


def check_deploy(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    warnings: list[CheckMessage] = []
    if not app_settings.FERNET_KEYS:
        warnings.append(
            Warning(
                "Tokens are encrypted with keys derived from SECRET_KEY.",
                hint="Set MANYCHAT_OAUTH_FERNET_KEYS to your own keys, so that rotating SECRET_KEY "
                "does not make stored tokens unreadable and a leaked SECRET_KEY does not expose them.",
                id="manychat_oauth.W001",
            )
        )
    redirect_uri = app_settings.REDIRECT_URI
    if redirect_uri and urlsplit(redirect_uri).scheme != "https":
        warnings.append(
            Warning(
                "MANYCHAT_OAUTH_REDIRECT_URI does not use https.",
                hint="Authorization codes travel in this URL: serve it over https.",
                id="manychat_oauth.W002",
            )
        )
    insecure = [
        f"MANYCHAT_OAUTH_{name}"
        for name in ("AUTHORIZE_URL", "TOKEN_URL", "API_BASE_URL")
        if urlsplit(getattr(app_settings, name)).scheme == "http"
    ]
    if insecure:
        warnings.append(
            Warning(
                f"{', '.join(insecure)} use{'s' if len(insecure) == 1 else ''} plain http.",
                hint="Tokens and the client secret would travel unencrypted: use https endpoints.",
                id="manychat_oauth.W004",
            )
        )
    return warnings


def check_app_install(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """W005: the install endpoint is routed but has no shared secret, so it refuses every call."""
    if app_settings.APP_INSTALL_SECRET:
        return []
    try:
        reverse("manychat_oauth:app_install")
    except NoReverseMatch:
        return []
    return [
        Warning(
            "The Manychat App install endpoint (manychat_oauth:app_install) is reachable but "
            "MANYCHAT_OAUTH_APP_INSTALL_SECRET is not set, so it refuses every install.",
            hint="Set MANYCHAT_OAUTH_APP_INSTALL_SECRET to a long random value and send it in the "
            f"{app_settings.APP_INSTALL_SECRET_HEADER} header of the auth.request section of your app JSON. "
            "If the site has no Manychat App Store app, silence manychat_oauth.W005.",
            id="manychat_oauth.W005",
        )
    ]
