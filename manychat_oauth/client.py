"""The only module that talks HTTP to Manychat (authorization server and API).

It owns the ``requests`` sessions (one per thread: a ``Session`` is not
guaranteed thread-safe), applies ``MANYCHAT_OAUTH_HTTP_TIMEOUT`` to every call,
and turns HTTP outcomes into the exceptions in ``exceptions.py``. Messages name
error codes and statuses only, never bodies or secrets.
"""

from __future__ import annotations

import base64
import datetime as dt
import email.utils
import hashlib
import logging
import re
import secrets
import threading
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlencode

import requests
import urllib3.exceptions
from django.utils import timezone
from django.views.decorators.debug import sensitive_variables

from . import __version__
from .conf import app_settings
from .exceptions import (
    InvalidClient,
    InvalidGrant,
    InvalidTokenResponse,
    OAuthError,
    ProviderUnavailable,
)

logger = logging.getLogger(__name__)

USER_AGENT = f"django-manychat-oauth/{__version__}"
#: The shape of registered OAuth error codes; anything else is not repeated.
ERROR_CODE = re.compile(r"[a-z][a-z0-9_]{0,63}")
#: Answers from the token endpoint and getInfo are a few hundred bytes.
MAX_BODY_BYTES = 1024 * 1024
BODY_READ_SIZE = 8192
_local = threading.local()


def get_session() -> requests.Session:
    """This thread's ``requests.Session`` (connection pooling, shared headers)."""
    session: requests.Session | None = getattr(_local, "session", None)
    if session is None:
        session = requests.Session()
        session.headers["User-Agent"] = USER_AGENT
        _local.session = session
    return session


@dataclass(frozen=True)
class TokenResponse:
    """A successful token endpoint answer. Secrets are left out of ``repr()``."""

    access_token: str = field(repr=False)
    refresh_token: str | None = field(repr=False)
    token_type: str
    expires_in: int | None
    scope: str
    received_at: dt.datetime

    @property
    def expires_at(self) -> dt.datetime | None:
        if self.expires_in is None:
            return None
        return self.received_at + dt.timedelta(seconds=self.expires_in)


def new_state() -> str:
    """An unguessable ``state`` value: 256 bits from the OS's CSPRNG."""
    return secrets.token_urlsafe(32)


def new_code_verifier() -> str:
    """A PKCE code verifier (RFC 7636 section 4.1): 86 characters, 512 bits."""
    return secrets.token_urlsafe(64)


def code_challenge(verifier: str) -> str:
    """The S256 code challenge for ``verifier``."""
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def build_authorize_url(*, redirect_uri: str, state: str, code_verifier: str | None) -> str:
    """The URL to send the user's browser to (RFC 6749 section 4.1.1)."""
    params = {
        "response_type": "code",
        "client_id": app_settings.CLIENT_ID or "",
        "redirect_uri": redirect_uri,
        "state": state,
    }
    scopes = app_settings.SCOPES
    if scopes:
        params["scope"] = " ".join(scopes)
    if code_verifier is not None:
        params["code_challenge"] = code_challenge(code_verifier)
        params["code_challenge_method"] = "S256"
    url = app_settings.AUTHORIZE_URL
    separator = "&" if "?" in url else "?"
    return f"{url}{separator}{urlencode(params, quote_via=quote)}"


@sensitive_variables()
def exchange_code(code: str, *, redirect_uri: str, code_verifier: str | None) -> TokenResponse:
    """Exchange an authorization code for tokens (RFC 6749 section 4.1.3)."""
    data = {"grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri}
    if code_verifier is not None:
        data["code_verifier"] = code_verifier
    return _token_request(data, previous_refresh_token=None)


@sensitive_variables()
def refresh_access_token(refresh_token: str) -> TokenResponse:
    """Use a refresh token (RFC 6749 section 6).

    When the provider returns no new refresh token, the old one stays valid
    and is returned in the response, so callers can always store what they get.
    """
    data = {"grant_type": "refresh_token", "refresh_token": refresh_token}
    scopes = app_settings.SCOPES
    if scopes:
        data["scope"] = " ".join(scopes)
    return _token_request(data, previous_refresh_token=refresh_token)


@sensitive_variables()
def _token_request(data: dict[str, str], *, previous_refresh_token: str | None) -> TokenResponse:
    client_id = app_settings.CLIENT_ID or ""
    client_secret = app_settings.CLIENT_SECRET or ""
    auth: tuple[str, str] | None = None
    if app_settings.TOKEN_AUTH_METHOD == "client_secret_basic":
        # RFC 6749 section 2.3.1: form-encode both parts before Basic auth.
        auth = (quote(client_id, safe=""), quote(client_secret, safe=""))
    else:
        data = {**data, "client_id": client_id, "client_secret": client_secret}
    grant = data["grant_type"]
    response = send(
        "POST",
        app_settings.TOKEN_URL,
        what=f"token endpoint ({grant})",
        data=data,
        auth=auth,
        headers={"Accept": "application/json"},
    )
    received_at = timezone.now()
    if response.status_code >= 400:
        sent = (client_secret, data.get("code"), data.get("code_verifier"), data.get("refresh_token"))
        raise _token_error(response, grant, sent_secrets=[value for value in sent if value])
    payload = _json_or_none(response)
    if not isinstance(payload, dict):
        raise InvalidTokenResponse(
            f"The token endpoint answered HTTP {response.status_code} with a body that is not a JSON object."
        )
    access_token = payload.get("access_token")
    if not isinstance(access_token, str) or not access_token:
        raise InvalidTokenResponse("The token endpoint's answer has no access_token.")
    refresh_token = payload.get("refresh_token")
    if not isinstance(refresh_token, str) or not refresh_token:
        refresh_token = previous_refresh_token
    logger.info("Token endpoint answered HTTP %s for %s.", response.status_code, grant)
    return TokenResponse(
        access_token=access_token,
        refresh_token=refresh_token,
        token_type=str(payload.get("token_type") or "Bearer"),
        expires_in=_int_or_none(payload.get("expires_in")),
        scope=_scope(payload.get("scope")),
        received_at=received_at,
    )


def _token_error(response: requests.Response, grant: str, *, sent_secrets: list[str]) -> Exception:
    status = response.status_code
    if status == 429 or status >= 500:
        return ProviderUnavailable(
            f"The token endpoint answered HTTP {status} for {grant}.",
            code=f"http_{status}",
            retry_after=parse_retry_after(response.headers.get("Retry-After")),
        )
    payload = _json_or_none(response)
    error = payload.get("error") if isinstance(payload, dict) else None
    error = error if isinstance(error, str) and _is_error_code(error, sent_secrets) else None
    message = f"The token endpoint answered HTTP {status} {error or 'without an error code'} for {grant}."
    if error == "invalid_grant":
        return InvalidGrant(message)
    if error in ("invalid_client", "unauthorized_client") or (error is None and status == 401):
        return InvalidClient(message, code=error or "invalid_client")
    return OAuthError(message, code=error or f"http_{status}")


def _is_error_code(value: str, sent_secrets: list[str]) -> bool:
    """Whether ``value`` looks like an OAuth error code and repeats nothing we sent."""
    return bool(ERROR_CODE.fullmatch(value)) and not any(value in secret for secret in sent_secrets)


@sensitive_variables()
def send(method: str, url: str, *, what: str, **kwargs: Any) -> requests.Response:
    """Send one request with the configured timeout; network failures become
    ``ProviderUnavailable``. ``what`` names the call in messages.

    The timeout bounds connecting and each wait for the answer to start; the
    whole body must then arrive within the timeout too, so a server that
    trickles its body a byte at a time cannot hold a worker for ever.
    """
    timeout = kwargs.setdefault("timeout", app_settings.HTTP_TIMEOUT)
    kwargs["stream"] = True
    try:
        response = get_session().request(method, url, **kwargs)
    except requests.ConnectTimeout:
        raise ProviderUnavailable(f"Timed out connecting to the {what}.", code="connect_timeout") from None
    except requests.ReadTimeout:
        raise _read_timeout(what) from None
    except requests.ConnectionError as exc:
        # A refused connection never reached the server; a dropped one may have.
        refused = "NewConnectionError" in type(_root_cause(exc)).__name__ or _is_refused(exc)
        raise ProviderUnavailable(
            f"Could not reach the {what}." if refused else f"The connection to the {what} broke.",
            code="connection_error",
            ambiguous=not refused,
        ) from None
    except requests.RequestException as exc:
        raise ProviderUnavailable(
            f"The request to the {what} failed ({type(exc).__name__}).", code="request_error"
        ) from None
    _read_body(response, what=what, timeout=timeout)
    return response


def _read_timeout(what: str) -> ProviderUnavailable:
    return ProviderUnavailable(
        f"Timed out waiting for the {what} to answer; the request may have been processed.",
        code="read_timeout",
        ambiguous=True,
    )


def _read_body(response: requests.Response, *, what: str, timeout: Any) -> None:
    """Read the whole body into ``response.content`` within ``timeout`` (a total, not per read)."""
    if response.raw is None or response._content_consumed:  # type: ignore[attr-defined]  # built in memory
        return
    seconds = max(timeout) if isinstance(timeout, tuple) else timeout
    deadline = time.monotonic() + float(seconds) if seconds is not None else None
    read = getattr(response.raw, "read1", None)  # urllib3 >= 2.3: return what has arrived
    pieces = (
        iter(lambda: read(BODY_READ_SIZE, decode_content=True), b"")
        if read is not None
        else response.iter_content(BODY_READ_SIZE)
    )
    body = bytearray()
    try:
        for piece in pieces:
            body += piece
            if len(body) > MAX_BODY_BYTES:
                raise ProviderUnavailable(
                    f"The {what} sent an answer larger than {MAX_BODY_BYTES} bytes.",
                    code="response_too_large",
                    ambiguous=True,
                )
            if deadline is not None and time.monotonic() > deadline:
                raise _read_timeout(what)
    except (requests.RequestException, urllib3.exceptions.HTTPError, OSError) as exc:
        response.close()  # drops the connection: it is in an unknown state
        # A read that timed out or a connection dropped mid-body: the server
        # had the request, so it may have acted on it.
        timed_out = "ReadTimeout" in type(_root_cause(exc)).__name__ or "timed out" in str(exc)
        raise (_read_timeout(what) if timed_out else _broken(what)) from None
    except BaseException:
        response.close()
        raise
    response._content = bytes(body)
    response._content_consumed = True  # type: ignore[attr-defined]
    response.close()  # the body was read in full: this only returns the connection to the pool


def _broken(what: str) -> ProviderUnavailable:
    return ProviderUnavailable(f"The connection to the {what} broke.", code="connection_error", ambiguous=True)


def _root_cause(exc: BaseException) -> BaseException:
    seen = exc
    for candidate in exc.args:
        if isinstance(candidate, BaseException):
            seen = candidate
            reason = getattr(candidate, "reason", None)
            if isinstance(reason, BaseException):
                seen = reason
    return seen


def _is_refused(exc: BaseException) -> bool:
    current: BaseException | None = exc
    while current is not None:
        if isinstance(current, ConnectionRefusedError):
            return True
        current = current.__cause__ or current.__context__
    return False


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or HTTP-date)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return max(0.0, (when - timezone.now()).total_seconds())


def _json_or_none(response: requests.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def _int_or_none(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    try:
        number = int(value)
    except (TypeError, ValueError):
        return None
    return number if number >= 0 else None


def _scope(value: Any) -> str:
    if isinstance(value, list):
        return " ".join(str(item) for item in value)
    return str(value) if isinstance(value, str) else ""
