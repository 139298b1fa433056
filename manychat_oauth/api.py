"""Calls to Manychat's API (``MANYCHAT_OAUTH_API_BASE_URL``) with a Bearer credential."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from django.views.decorators.debug import sensitive_variables

from .client import _json_or_none, parse_retry_after, send
from .conf import app_settings
from .exceptions import ManychatAPIError, ManychatAuthError, ProviderUnavailable

if TYPE_CHECKING:
    from .models import ManychatConnection

logger = logging.getLogger(__name__)

GET_INFO_PATH = "/fb/page/getInfo"


@sensitive_variables("credential", "headers", "kwargs")
def call(method: str, path: str, credential: str, **kwargs: Any) -> Any:
    """Call ``path`` on Manychat's API and return the envelope's ``data``.

    Manychat declares only HTTP 200 and 400, so the envelope's ``status`` field
    decides success, not the HTTP code alone.
    """
    url = app_settings.API_BASE_URL.rstrip("/") + "/" + path.lstrip("/")
    headers = {"Authorization": f"Bearer {credential}", "Accept": "application/json"}
    headers.update(kwargs.pop("headers", {}) or {})
    what = f"Manychat API ({path.split('?')[0]})"
    response = send(method, url, what=what, headers=headers, **kwargs)
    status = response.status_code
    payload = _json_or_none(response)
    envelope_status = payload.get("status") if isinstance(payload, dict) else None
    api_message = _api_message(payload)
    if status == 401:
        raise ManychatAuthError(
            f"The {what} refused the credential (HTTP 401).", status_code=status, api_message=api_message
        )
    if status == 429 or status >= 500:
        raise ProviderUnavailable(
            f"The {what} answered HTTP {status}.",
            code=f"http_{status}" if envelope_status != "exception" else "api_exception",
            retry_after=parse_retry_after(response.headers.get("Retry-After")),
        )
    if envelope_status == "success" and status < 400:
        return payload.get("data")
    if envelope_status == "error" or status >= 400:
        raise ManychatAPIError(
            f"The {what} answered HTTP {status} with status 'error'.",
            status_code=status,
            api_message=api_message,
        )
    raise ManychatAPIError(
        f"The {what} answered HTTP {status} without a Manychat envelope.",
        code="invalid_response",
        status_code=status,
    )


@sensitive_variables("credential")
def get_page_info(credential: str) -> dict[str, Any]:
    """``GET /fb/page/getInfo``: the page the credential belongs to."""
    return _checked_page_info(call("GET", GET_INFO_PATH, credential))


def _checked_page_info(data: Any) -> dict[str, Any]:
    if not isinstance(data, dict) or not data.get("id"):
        raise ManychatAPIError("getInfo answered without a page id.", code="invalid_response")
    return data


class ManychatClient:
    """Manychat's API on behalf of one connection, always with a valid credential.

    ``request()`` returns the envelope's ``data``. When Manychat refuses the
    credential (HTTP 401), an OAuth connection is refreshed once and the call
    retried once; an API-key or App connection is marked ``reauth_required``.
    For an App connection, Manychat's "uninstalled app" answer counts as a
    signal towards marking it uninstalled, as in the health check.
    Raises ``ManychatAuthError`` (refused), ``ManychatAPIError`` (``status:
    "error"``, with Manychat's message in ``api_message``), ``ProviderUnavailable``
    (network, timeout, 5xx, 429) and ``ConnectionNotActive``.
    """

    def __init__(self, connection: ManychatConnection) -> None:
        self.connection = connection

    def __repr__(self) -> str:
        return f"<ManychatClient connection={self.connection.pk}>"

    def get_page_info(self) -> dict[str, Any]:
        """``GET /fb/page/getInfo``: the connected page's details."""
        return _checked_page_info(self.request("GET", GET_INFO_PATH))

    @sensitive_variables("credential", "retry_with", "kwargs")
    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        """Call ``path`` (relative to ``MANYCHAT_OAUTH_API_BASE_URL``) and return the envelope's ``data``.

        ``kwargs`` go to ``requests`` (``params``, ``json``, ...); the configured
        timeout applies unless ``timeout`` is given.
        """
        credential = self.connection.get_access_token()
        try:
            return self._call(method, path, credential, **kwargs)
        except ManychatAuthError as exc:
            retry_with = self._after_refusal(credential, exc)
        return self._call(method, path, retry_with, **kwargs)

    @sensitive_variables("credential", "kwargs")
    def _call(self, method: str, path: str, credential: str, **kwargs: Any) -> Any:
        """``call()``, counting App-uninstall signals (see ``health.record_uninstall_signal``)."""
        from . import health

        try:
            data = call(method, path, credential, **kwargs)
        except ProviderUnavailable as exc:
            health.record_uninstall_signal(self.connection, exc)
            raise
        health.clear_uninstall_signal(self.connection)
        return data

    @sensitive_variables("refused", "fresh")
    def _after_refusal(self, refused: str, exc: ManychatAuthError) -> str:
        """The credential to retry with once, or raise ``exc``."""
        from . import health
        from .models import ManychatConnection
        from .refresh import refresh_connection_committed

        connection = self.connection
        if connection.auth_type != ManychatConnection.AuthType.OAUTH:
            health.record_refused_credential(connection, exc)
            raise exc
        # Committed on its own, even inside the caller's transaction.
        outcome = refresh_connection_committed(connection.pk, force=True).outcome
        connection.refresh_from_db()
        logger.info("Connection %s: Manychat refused the token; refresh %s.", connection.pk, outcome)
        # Another worker may have refreshed it meanwhile: any new token is worth one retry.
        fresh = connection.get_access_token()
        if fresh == refused:
            raise exc
        return fresh


def page_fields(info: dict[str, Any]) -> dict[str, Any]:
    """Map a ``getInfo`` answer onto ``ManychatConnection`` fields."""
    is_pro = info.get("is_pro")
    return {
        "page_id": str(info.get("id", ""))[:64],
        "page_name": str(info.get("name") or "")[:255],
        "page_username": str(info.get("username") or "")[:255],
        "page_category": str(info.get("category") or "")[:255],
        "page_avatar_url": str(info.get("avatar_link") or "")[:1000],
        "page_timezone": str(info.get("timezone") or "")[:64],
        "page_is_pro": is_pro if isinstance(is_pro, bool) else None,
    }


def _api_message(payload: Any) -> str:
    message = payload.get("message") if isinstance(payload, dict) else None
    return message[:200] if isinstance(message, str) else ""
