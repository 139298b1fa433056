"""The sandbox playing Manychat's App Store: install an app on a page, call the site's endpoint, uninstall."""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass, field
from typing import Any

import requests
from django.utils import timezone

from manychat_oauth.conf import app_settings

from .models import SandboxAppInstall, SandboxPage

#: Where the App Key travels in the install request, as the app JSON may configure it.
TOKEN_PLACES = ("payload", "header", "both")


class EndpointUnreachable(Exception):
    """The site's install endpoint could not be reached."""


@dataclass(frozen=True)
class InstallCall:
    """What the site answered to the install request (Manychat shows ``message`` to the user)."""

    install: SandboxAppInstall = field(repr=False)
    status_code: int
    body: Any

    @property
    def ok(self) -> bool:
        return self.status_code == 200

    @property
    def message(self) -> str:
        message = self.body.get("message") if isinstance(self.body, dict) else None
        return message if isinstance(message, str) else ""


def create_install(page: SandboxPage, *, app_id: str = "sandbox-app", app_version: str = "1") -> SandboxAppInstall:
    """Install the app on ``page``: Manychat generates a new App Key for each installation."""
    return SandboxAppInstall.objects.create(
        page=page, app_id=app_id, app_version=app_version, key=f"{page.page_id}:app{secrets.token_hex(20)}"
    )


def send_install_request(
    install: SandboxAppInstall,
    *,
    url: str,
    secret: str,
    link_code: str,
    token_in: str = "payload",
    secret_header: str | None = None,
    token_header: str | None = None,
    timeout: float = 10,
) -> InstallCall:
    """POST the install request to ``url`` as Manychat does after an installation.

    This mirrors the ``auth.request`` section documented in the README: the
    secret in a header, the App Key in the payload and/or a header, and the
    ``page_id``, ``app_id``, ``app_version`` and ``link_code`` values.
    """
    if token_in not in TOKEN_PLACES:
        raise ValueError(f"token_in must be one of {', '.join(TOKEN_PLACES)}.")
    headers = {
        "Content-Type": "application/json",
        secret_header or app_settings.APP_INSTALL_SECRET_HEADER: secret,
    }
    payload: dict[str, Any] = {
        "page_id": install.page.page_id,
        "app_id": install.app_id,
        "app_version": install.app_version,
        "link_code": link_code,
    }
    if token_in in ("payload", "both"):
        payload["app_token"] = install.key
    if token_in in ("header", "both"):
        headers[token_header or app_settings.APP_TOKEN_HEADER] = install.key
    try:
        response = requests.post(url, data=json.dumps(payload), headers=headers, timeout=timeout, allow_redirects=False)
    except requests.RequestException as exc:
        raise EndpointUnreachable(f"Could not reach {url}: {type(exc).__name__}.") from None
    try:
        body: Any = response.json()
    except ValueError:
        body = None
    return InstallCall(install=install, status_code=response.status_code, body=body)


def install_app(page: SandboxPage, *, url: str, secret: str, link_code: str, **options: Any) -> InstallCall:
    """Install the app on ``page`` and call the site's install endpoint with the new App Key."""
    app_id = options.pop("app_id", "sandbox-app")
    app_version = options.pop("app_version", "1")
    return send_install_request(
        create_install(page, app_id=app_id, app_version=app_version),
        url=url,
        secret=secret,
        link_code=link_code,
        **options,
    )


def uninstall_app(page: SandboxPage, *, app_id: str | None = None) -> int:
    """Uninstall the app from ``page``: calls with its keys now answer 500 ``{"status": "exception"}``."""
    installs = SandboxAppInstall.objects.filter(page=page, uninstalled_at__isnull=True)
    if app_id:
        installs = installs.filter(app_id=app_id)
    return installs.update(uninstalled_at=timezone.now())
