"""The user-facing pages: connect (OAuth or API key), OAuth callback, connections, disconnect."""

from __future__ import annotations

import logging
import time
from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.cache import cache
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect, QueryDict
from django.shortcuts import get_object_or_404, render, resolve_url
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.cache import never_cache
from django.views.decorators.debug import sensitive_post_parameters, sensitive_variables
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from . import api, client, services
from .app_install import link_code_for_session
from .conf import app_settings
from .exceptions import InvalidClient, InvalidTokenResponse, ManychatOAuthError, ProviderUnavailable
from .forms import ApiKeyForm
from .models import ManychatConnection

logger = logging.getLogger(__name__)

#: Session key holding the pending flows, keyed by state.
SESSION_KEY = "manychat_oauth_flows"
#: Pending flows kept per session (several tabs may start one each).
MAX_PENDING_FLOWS = 5
#: API keys a user may submit per window, so the form cannot be used to guess keys
#: or to hammer Manychat through this site.
API_KEY_ATTEMPTS = 10
API_KEY_WINDOW_SECONDS = 60


def safe_next(request: HttpRequest, value: str | None) -> str | None:
    """``value`` if it is a path on this site (``/...``), else ``None``.

    Relative paths are refused too (resolved against the callback's URL they
    are never what the caller meant), and so is anything a browser could read
    as another host (``//host``, ``/\\host``).
    """
    if (
        value
        and value.startswith("/")
        and not value.startswith(("//", "/\\"))
        and url_has_allowed_host_and_scheme(
            value, allowed_hosts={request.get_host()}, require_https=request.is_secure()
        )
    ):
        return value
    return None


def redirect_uri_for(request: HttpRequest) -> str:
    return app_settings.REDIRECT_URI or request.build_absolute_uri(reverse("manychat_oauth:callback"))


def oauth_configured() -> bool:
    return bool(app_settings.CLIENT_ID and app_settings.CLIENT_SECRET)


def error_page(request: HttpRequest, title: str, message: str, *, status: int = 400) -> HttpResponse:
    return render(
        request,
        "manychat_oauth/error.html",
        {"title": title, "message": message, "retry_url": reverse("manychat_oauth:connect")},
        status=status,
    )


@never_cache
@login_required
@require_http_methods(["GET", "POST"])
@sensitive_variables("verifier", "flows")
def connect(request: HttpRequest) -> HttpResponse:
    """GET: a page with a Connect button. POST: start the OAuth flow."""
    next_url = safe_next(request, request.POST.get("next") or request.GET.get("next"))
    if request.method == "GET":
        return render(
            request,
            "manychat_oauth/connect.html",
            {"oauth_configured": oauth_configured(), "next": next_url or ""},
        )
    if not oauth_configured():
        return error_page(
            request,
            "Connecting with Manychat is not set up",
            "This site has no Manychat OAuth client configured. Ask the site's administrator, "
            "or connect with a page API key instead.",
            status=503,
        )
    state = client.new_state()
    verifier = client.new_code_verifier() if app_settings.USE_PKCE else None
    redirect_uri = redirect_uri_for(request)
    flows: dict[str, Any] = dict(request.session.get(SESSION_KEY) or {})
    # Keep only the newest flows so an abandoned tab cannot grow the session.
    for old in sorted(flows, key=lambda s: flows[s].get("created", 0))[: max(0, len(flows) - MAX_PENDING_FLOWS + 1)]:
        del flows[old]
    flows[state] = {
        "verifier": verifier,
        "created": time.time(),
        "user_id": str(request.user.pk),
        "next": next_url,
        "redirect_uri": redirect_uri,
    }
    request.session[SESSION_KEY] = flows
    logger.info("OAuth flow started for user %s.", request.user.pk)
    return HttpResponseRedirect(
        client.build_authorize_url(redirect_uri=redirect_uri, state=state, code_verifier=verifier)
    )


def _pop_flow(request: HttpRequest, state: str) -> dict[str, Any] | None:
    flows: dict[str, Any] = dict(request.session.get(SESSION_KEY) or {})
    flow = flows.pop(state, None)
    if flow is not None:
        request.session[SESSION_KEY] = flows
    return flow if isinstance(flow, dict) else None


def _redact_code(request: HttpRequest) -> None:
    """Replace the authorization code in the request once it has been read.

    Django logs 4xx and 5xx responses with the request (whose repr shows the
    query string), error reports list ``request.GET``, and middleware may log
    the URL after the view: none of them get to see the code.
    """
    if "code" not in request.GET:
        return
    query = request.GET.copy()
    query.setlist("code", ["[redacted]"] * len(query.getlist("code")))
    request.META["QUERY_STRING"] = query.urlencode(safe="[]")
    request.GET = QueryDict(request.META["QUERY_STRING"])


@never_cache
@login_required
@require_GET
@sensitive_variables("code", "tokens", "flow")
def callback(request: HttpRequest) -> HttpResponse:
    """The authorization server sends the user back here with a code or an error."""
    code = request.GET.get("code", "")
    _redact_code(request)
    state = request.GET.get("state", "")
    if not state or len(state) > 200:
        return error_page(
            request, "Connection failed", "The answer from Manychat had no valid state. Please try again."
        )
    # Popping first makes the state single-use, whatever happens next.
    flow = _pop_flow(request, state)
    if flow is None:
        logger.warning("OAuth callback with an unknown or already used state for user %s.", request.user.pk)
        return error_page(
            request,
            "Connection failed",
            "This sign-in link was already used, has expired, or was started in another browser. Please try again.",
        )
    if flow.get("user_id") != str(request.user.pk):
        logger.warning("OAuth callback state belongs to another user (user %s).", request.user.pk)
        return error_page(request, "Connection failed", "This sign-in was started by another user. Please try again.")
    if time.time() - float(flow.get("created", 0)) > app_settings.STATE_MAX_AGE:
        return error_page(request, "Connection failed", "This sign-in took too long and has expired. Please try again.")

    error = request.GET.get("error", "")
    if error == "access_denied":
        return render(request, "manychat_oauth/denied.html", {"retry_url": reverse("manychat_oauth:connect")})
    if error:
        logger.warning("Authorization server answered error=%r.", error[:64])
        return error_page(request, "Connection failed", "Manychat did not authorize the connection. Please try again.")
    if not code or len(code) > 2048:
        return error_page(
            request, "Connection failed", "The answer from Manychat had no authorization code. Please try again."
        )

    try:
        tokens = client.exchange_code(
            code, redirect_uri=flow.get("redirect_uri") or redirect_uri_for(request), code_verifier=flow.get("verifier")
        )
    except (ProviderUnavailable, InvalidTokenResponse) as exc:
        # Manychat is down, slow or answered nonsense: a bad gateway, not a bad request.
        logger.warning("Code exchange failed: %s", exc.code)
        return error_page(
            request,
            "Manychat is not answering",
            "We could not reach Manychat to finish connecting. Please try again in a few minutes.",
            status=502,
        )
    except InvalidClient as exc:
        # This site's client id or secret was refused: nothing the user can fix.
        logger.error(
            "Code exchange refused the client credentials (%s): check MANYCHAT_OAUTH_CLIENT_ID/SECRET.", exc.code
        )
        return error_page(
            request,
            "Connecting with Manychat is not available",
            "Manychat did not accept this site's own credentials: a problem with the site's setup, not with "
            "your account. Please try again later, or connect with a page API key instead.",
            status=503,
        )
    except ManychatOAuthError as exc:
        logger.warning("Code exchange failed: %s", exc.code)
        return error_page(request, "Connection failed", "Manychat did not accept this sign-in. Please try again.")

    page: dict[str, Any] | None = None
    try:
        page = api.page_fields(api.get_page_info(tokens.access_token))
    except ManychatOAuthError as exc:
        # The tokens are good; the page details can be filled in later.
        logger.warning("getInfo after connecting failed (%s); saving the connection without page details.", exc.code)

    connection, _created = services.save_connection(
        request.user,
        auth_type=ManychatConnection.AuthType.OAUTH,
        access_token=tokens.access_token,
        refresh_token=tokens.refresh_token,
        token_type=tokens.token_type,
        scope=tokens.scope,
        expires_at=tokens.expires_at,
        page=page,
    )
    messages.success(request, f"Connected to {connection.page_name or 'your Manychat page'}.")
    return HttpResponseRedirect(flow.get("next") or resolve_url(app_settings.CONNECTED_URL))


def api_key_attempt_allowed(user: Any) -> bool:
    """Count one API-key attempt for ``user``; ``False`` past the limit (fixed window, Django's cache)."""
    window = int(time.time() // API_KEY_WINDOW_SECONDS)
    key = f"manychat_oauth:api_key_attempts:{user.pk}:{window}"
    cache.add(key, 0, timeout=API_KEY_WINDOW_SECONDS * 2)
    try:
        count = cache.incr(key)
    except ValueError:  # evicted between add() and incr()
        cache.set(key, 1, timeout=API_KEY_WINDOW_SECONDS * 2)
        count = 1
    return count <= API_KEY_ATTEMPTS


def _api_key_page(
    request: HttpRequest, form: ApiKeyForm, next_url: str | None, *, error: str = "", status: int = 200
) -> HttpResponse:
    return render(
        request,
        "manychat_oauth/connect_api_key.html",
        {"form": form, "next": next_url or "", "error": error},
        status=status,
    )


@sensitive_post_parameters("api_key")
@never_cache
@login_required
@require_http_methods(["GET", "POST"])
def connect_api_key(request: HttpRequest) -> HttpResponse:
    """GET: a form for a page API key. POST: verify the key with Manychat, then save it."""
    next_url = safe_next(request, request.POST.get("next") or request.GET.get("next"))
    if request.method == "GET":
        return _api_key_page(request, ApiKeyForm(), next_url)
    if not api_key_attempt_allowed(request.user):
        logger.warning("API key attempts of user %s rate-limited.", request.user.pk)
        return _api_key_page(
            request,
            ApiKeyForm(),
            next_url,
            error=f"Too many attempts: you can try {API_KEY_ATTEMPTS} keys a minute. Wait a minute, then try again.",
            status=429,
        )
    form = ApiKeyForm(request.POST)
    if not form.is_valid():
        return _api_key_page(request, form, next_url, status=503 if form.unavailable else 400)
    connection, _created = form.save(request.user)
    messages.success(request, f"Connected to {connection.page_name or 'your Manychat page'} with its API key.")
    return HttpResponseRedirect(next_url or resolve_url(app_settings.CONNECTED_URL))


@never_cache
@login_required
@require_GET
def connections(request: HttpRequest) -> HttpResponse:
    """The user's connections with their status and actions."""
    rows = ManychatConnection.objects.for_user(request.user).exclude(status=ManychatConnection.Status.DISCONNECTED)
    return render(
        request,
        "manychat_oauth/connections.html",
        {"connections": rows, "oauth_configured": oauth_configured(), **app_install_context(request)},
    )


def app_install_context(request: HttpRequest) -> dict[str, Any]:
    """The link code and install link for App Store installs, once the install endpoint is set up."""
    if not app_settings.APP_INSTALL_SECRET:
        return {}
    return {"app_link_code": link_code_for_session(request), "app_install_url": app_settings.APP_INSTALL_URL}


@login_required
@require_POST
def disconnect(request: HttpRequest, pk: int) -> HttpResponse:
    """Disconnect one of the user's own connections (another user's gives 404)."""
    connection = get_object_or_404(ManychatConnection, pk=pk, user=request.user)
    services.disconnect(connection)
    messages.success(request, f"Disconnected {connection.page_name or 'the page'}.")
    return HttpResponseRedirect(reverse("manychat_oauth:connections"))
