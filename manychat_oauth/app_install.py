"""Manychat App Store installs: link codes, and the install request Manychat sends.

When a user installs the site's app in Manychat, Manychat POSTs the new App
Key to ``app_install`` (see ``app_views.py``) with the page id and the *link
code* the user typed in. The link code, shown on the user's connections page,
says which site user the installation belongs to. Codes are short, single-use,
expire, and only a keyed hash of each is stored.
"""

from __future__ import annotations

import datetime as dt
import hmac
import logging
import secrets
from dataclasses import dataclass, field
from typing import Any

from django.db import IntegrityError, transaction
from django.http import HttpRequest
from django.utils import timezone
from django.utils.crypto import salted_hmac
from django.views.decorators.debug import sensitive_variables

from . import api, services
from .conf import app_settings
from .exceptions import ManychatAPIError, ProviderUnavailable
from .models import ManychatConnection, ManychatLinkCode

logger = logging.getLogger(__name__)

#: No 0/O, 1/I/L: the user reads the code on one screen and types it on another.
LINK_CODE_ALPHABET = "ABCDEFGHJKMNPQRSTUVWXYZ23456789"
LINK_CODE_LENGTH = 8
#: Unused codes kept per user; older ones are dropped when a new one is issued.
MAX_LIVE_CODES_PER_USER = 5
#: Expired codes are purged this long after expiry (used ones still answer replays until then).
PURGE_AFTER = dt.timedelta(days=1)
#: Session key holding the code shown on the connections page.
SESSION_KEY = "manychat_oauth_link_code"
_HASH_SALT = "manychat_oauth.app_install.link_code"

BAD_CODE_MESSAGE = (
    "This link code is unknown, already used or expired. Open your Manychat connections page on "
    "our site, copy the code shown there, and install again."
)


class AppInstallRefused(Exception):
    """The install request cannot be accepted; ``message`` is shown to the user by Manychat."""

    def __init__(self, message: str, *, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


# -- Link codes -------------------------------------------------------------


def normalize_link_code(value: str) -> str | None:
    """The code in canonical form (upper case, no dashes or spaces), or ``None`` if malformed."""
    cleaned = "".join(ch for ch in value.upper() if ch not in "- \t")
    if len(cleaned) != LINK_CODE_LENGTH or any(ch not in LINK_CODE_ALPHABET for ch in cleaned):
        return None
    return cleaned


def hash_link_code(normalized: str) -> str:
    """A keyed hash (HMAC-SHA256 keyed by ``SECRET_KEY``): the stored form of a code."""
    return salted_hmac(_HASH_SALT, normalized, algorithm="sha256").hexdigest()


def format_link_code(normalized: str) -> str:
    half = LINK_CODE_LENGTH // 2
    return f"{normalized[:half]}-{normalized[half:]}"


@dataclass(frozen=True)
class IssuedLinkCode:
    """A code as shown to its user (``code`` is only known at issue time and in the session)."""

    code: str = field(repr=False)
    expires_at: dt.datetime
    pk: int


def issue_link_code(user: Any) -> IssuedLinkCode:
    """A new link code for ``user``, valid for ``MANYCHAT_OAUTH_APP_LINK_CODE_MAX_AGE`` seconds."""
    now = timezone.now()
    ManychatLinkCode.objects.filter(expires_at__lt=now - PURGE_AFTER).delete()
    live = ManychatLinkCode.objects.filter(user=user, used_at__isnull=True, expires_at__gt=now).order_by("-created_at")
    stale = list(live.values_list("pk", flat=True)[MAX_LIVE_CODES_PER_USER - 1 :])
    if stale:
        ManychatLinkCode.objects.filter(pk__in=stale).delete()
    expires_at = now + dt.timedelta(seconds=app_settings.APP_LINK_CODE_MAX_AGE)
    for _attempt in range(5):
        code = "".join(secrets.choice(LINK_CODE_ALPHABET) for _ in range(LINK_CODE_LENGTH))
        try:
            with transaction.atomic():
                row = ManychatLinkCode.objects.create(user=user, code_hash=hash_link_code(code), expires_at=expires_at)
        except IntegrityError:  # pragma: no cover - a collision among live codes: 1 in 8.5e11
            continue
        return IssuedLinkCode(format_link_code(code), row.expires_at, row.pk)
    raise RuntimeError("Could not issue a unique link code.")  # pragma: no cover


def link_code_for_session(request: HttpRequest) -> IssuedLinkCode:
    """The code to show this user now: the one held in the session while it is fresh, else a new one.

    A code with less than a third of its life left is replaced (it stays valid
    until it expires), so the user never starts typing a code about to expire.
    """
    held = request.session.get(SESSION_KEY)
    if isinstance(held, dict) and isinstance(held.get("code"), str) and isinstance(held.get("pk"), int):
        fresh_until = timezone.now() + dt.timedelta(seconds=app_settings.APP_LINK_CODE_MAX_AGE / 3)
        row = ManychatLinkCode.objects.filter(
            pk=held["pk"], user=request.user.pk or 0, used_at__isnull=True, expires_at__gt=fresh_until
        ).first()
        if row is not None:
            return IssuedLinkCode(held["code"], row.expires_at, row.pk)
    issued = issue_link_code(request.user)
    request.session[SESSION_KEY] = {"pk": issued.pk, "code": issued.code}
    return issued


# -- The install request ----------------------------------------------------


@dataclass(frozen=True)
class InstallRequest:
    """What Manychat sent. The key and the code are left out of ``repr()``."""

    app_token: str = field(repr=False)
    link_code: str = field(repr=False)
    page_id: str = ""
    app_id: str = ""
    app_version: str = ""


def _text(payload: dict[str, Any], name: str, max_length: int) -> str:
    value = payload.get(name)
    if value is None:
        return ""
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise AppInstallRefused(f"'{name}' must be a string.")
    text = str(value).strip()
    if len(text) > max_length:
        raise AppInstallRefused(f"'{name}' is too long (at most {max_length} characters).")
    if "{{" in text or "[[" in text:
        raise AppInstallRefused(
            f"'{name}' arrived as an unfilled template; check the auth.request section of the app JSON."
        )
    return text


def parse_install_request(payload: Any, header_token: str | None) -> InstallRequest:
    """Validate the JSON body (and the key header); raise ``AppInstallRefused`` with a message for Manychat."""
    if not isinstance(payload, dict):
        raise AppInstallRefused("The request body must be a JSON object.")
    body_token = _text(payload, "app_token", 1000)
    header_token = (header_token or "").strip()
    if body_token and header_token and not hmac.compare_digest(body_token.encode(), header_token.encode()):
        raise AppInstallRefused("The App Key in the payload and in the header differ.")
    token = body_token or header_token
    if "{{" in token:
        raise AppInstallRefused("The App Key arrived as an unfilled template; check the app JSON.")
    if not token or len(token) > 1000 or any(ch.isspace() or not ch.isprintable() for ch in token):
        raise AppInstallRefused(
            f"No usable App Key: send it as 'app_token' in the payload or in the {app_settings.APP_TOKEN_HEADER} header."
        )
    link_code = _text(payload, "link_code", 64)
    if not link_code:
        raise AppInstallRefused(
            "No link code was sent. Copy the code from your Manychat connections page on our site "
            "into the app's settings, and install again."
        )
    return InstallRequest(
        app_token=token,
        link_code=link_code,
        page_id=_text(payload, "page_id", 64),
        app_id=_text(payload, "app_id", 64),
        app_version=_text(payload, "app_version", 32),
    )


@sensitive_variables("normalized")
def install(request: InstallRequest) -> tuple[ManychatConnection, bool]:
    """Verify the App Key with ``getInfo`` and save the connection for the code's user.

    Returns ``(connection, replayed)``. The same request sent again (same key,
    page and code) answers with the connection it made instead of "code used".
    """
    normalized = normalize_link_code(request.link_code)
    if normalized is None:
        raise AppInstallRefused(BAD_CODE_MESSAGE)
    code_hash = hash_link_code(normalized)
    code = ManychatLinkCode.objects.filter(code_hash=code_hash).first()
    replayed = _replayed_connection(code, request)
    if replayed is not None:
        return replayed, True
    _usable_or_refuse(code)

    page = _verified_page(request)
    with transaction.atomic():
        # Lock the code: of two identical requests racing, the second waits
        # here and then sees a replay.
        code = ManychatLinkCode.objects.select_for_update().filter(code_hash=code_hash).first()
        replayed = _replayed_connection(code, request)
        if replayed is not None:
            return replayed, True
        code = _usable_or_refuse(code)
        connection, created = services.save_connection(
            code.user,
            auth_type=ManychatConnection.AuthType.APP,
            access_token=request.app_token,
            page=page,
            extra={"app_id": request.app_id, "app_version": request.app_version},
        )
        code.used_at = timezone.now()
        code.connection = connection
        code.save(update_fields=["used_at", "connection"])
    logger.info(
        "App install %s connection %s for user %s (page %s, app %s version %s).",
        "created" if created else "updated",
        connection.pk,
        code.user_id,
        connection.page_id,
        request.app_id or "?",
        request.app_version or "?",
    )
    return connection, False


def _usable_or_refuse(code: ManychatLinkCode | None) -> ManychatLinkCode:
    if code is None or code.used_at is not None or code.is_expired:
        logger.warning(
            "App install refused: link code %s.",
            "unknown" if code is None else ("already used" if code.used_at else "expired"),
        )
        raise AppInstallRefused(BAD_CODE_MESSAGE)
    return code


def _replayed_connection(code: ManychatLinkCode | None, request: InstallRequest) -> ManychatConnection | None:
    if code is None or code.used_at is None or code.connection_id is None:
        return None
    connection = ManychatConnection.objects.filter(pk=code.connection_id).first()
    if (
        connection is None
        or connection.auth_type != ManychatConnection.AuthType.APP
        or connection.status != ManychatConnection.Status.ACTIVE
        or (request.page_id and request.page_id != connection.page_id)
    ):
        return None
    if not hmac.compare_digest((connection.access_token or "").encode(), request.app_token.encode()):
        return None
    logger.info("App install replayed for connection %s; nothing changed.", connection.pk)
    return connection


def _verified_page(request: InstallRequest) -> dict[str, Any]:
    try:
        info = api.get_page_info(request.app_token)
    except ProviderUnavailable as exc:
        logger.warning("App install: getInfo with the new App Key failed (%s).", exc.code)
        raise AppInstallRefused(
            "We could not check the App Key with Manychat just now. Please retry in a minute.", status=502
        ) from None
    except ManychatAPIError as exc:
        logger.warning("App install: Manychat did not accept the App Key (%s).", exc.code)
        raise AppInstallRefused("Manychat did not accept this App Key. Reinstall the app and try again.") from None
    page = api.page_fields(info)
    if request.page_id and request.page_id != page["page_id"]:
        logger.warning("App install refused: the page_id sent is not the App Key's page (%s).", page["page_id"])
        raise AppInstallRefused("The page_id does not match the page of this App Key.")
    return page
