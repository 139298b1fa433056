"""Calls to Manychat's API (``MANYCHAT_OAUTH_API_BASE_URL``) with a Bearer credential."""

from __future__ import annotations

from typing import Any

from django.views.decorators.debug import sensitive_variables

from .client import _json_or_none, parse_retry_after, send
from .conf import app_settings
from .exceptions import ManychatAPIError, ManychatAuthError, ProviderUnavailable


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
    data = call("GET", "/fb/page/getInfo", credential)
    if not isinstance(data, dict) or not data.get("id"):
        raise ManychatAPIError("getInfo answered without a page id.", code="invalid_response")
    return data


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
    if isinstance(payload, dict) and isinstance(payload.get("message"), str):
        return payload["message"][:200]
    return ""
