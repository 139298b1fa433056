"""The sandbox's endpoints, answering like Manychat (and RFC 6749) would."""

from __future__ import annotations

import base64
import datetime as dt
import functools
import hmac
import secrets
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote, urlencode

from django.conf import settings
from django.db.models import F
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect, JsonResponse
from django.http.response import HttpResponseBase
from django.shortcuts import render
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from manychat_oauth.client import code_challenge
from manychat_oauth.conf import app_settings

from .faults import FaultPlan, take_fault
from .models import SandboxApiKey, SandboxAppInstall, SandboxAuthorizationCode, SandboxPage, SandboxToken

CODE_LIFETIME = dt.timedelta(minutes=10)


FaultView = Callable[[HttpRequest, FaultPlan], HttpResponseBase]


def with_faults(endpoint: str) -> Callable[[FaultView], Callable[[HttpRequest], HttpResponseBase]]:
    """Apply the switched-on fault for ``endpoint``: answer in the view's place,
    or hand the view the plan (for delays after the work and slow bodies)."""

    def decorator(view: FaultView) -> Callable[[HttpRequest], HttpResponseBase]:
        @functools.wraps(view)
        def wrapper(request: HttpRequest) -> HttpResponseBase:
            plan = take_fault(endpoint)
            faulted = plan.before()
            return faulted if faulted is not None else view(request, plan)

        return wrapper

    return decorator


def token_lifetime() -> int:
    return int(getattr(settings, "MANYCHAT_SANDBOX_TOKEN_LIFETIME", 3600))


def expected_client() -> tuple[str, str]:
    """The one client the sandbox knows: the app's own configured credentials."""
    return (
        getattr(settings, "MANYCHAT_SANDBOX_CLIENT_ID", None) or app_settings.CLIENT_ID or "",
        getattr(settings, "MANYCHAT_SANDBOX_CLIENT_SECRET", None) or app_settings.CLIENT_SECRET or "",
    )


def default_page() -> SandboxPage:
    page = SandboxPage.objects.order_by("pk").first()
    if page is None:
        page, _ = SandboxPage.objects.get_or_create(
            page_id="1000001",
            defaults={"name": "Sandbox Coffee Shop", "username": "sandbox_coffee", "category": "Coffee shop"},
        )
    return page


def _redirect_with(redirect_uri: str, params: dict[str, str]) -> HttpResponseRedirect:
    separator = "&" if "?" in redirect_uri else "?"
    return HttpResponseRedirect(f"{redirect_uri}{separator}{urlencode(params)}")


@never_cache
@require_http_methods(["GET", "POST"])
@with_faults("authorize")
def authorize(request: HttpRequest, plan: FaultPlan) -> HttpResponseBase:
    """The consent page: choose a page, Approve or Deny."""
    params = request.POST if request.method == "POST" else request.GET
    client_id = params.get("client_id", "")
    redirect_uri = params.get("redirect_uri", "")
    state = params.get("state", "")
    problem = None
    if not client_id or not hmac.compare_digest(client_id, expected_client()[0]):
        problem = "Unknown client_id."
    elif not redirect_uri.startswith(("http://", "https://")):
        problem = "Missing or invalid redirect_uri."
    if problem:
        # RFC 6749 4.1.2.1: never redirect to an unverified redirect URI.
        return render(request, "manychat_sandbox/error.html", {"problem": problem}, status=400)
    if params.get("response_type") != "code":
        return _redirect_with(redirect_uri, {"error": "unsupported_response_type", "state": state})
    challenge = params.get("code_challenge", "")
    method = params.get("code_challenge_method", "plain" if challenge else "")
    if challenge and method != "S256":
        return _redirect_with(redirect_uri, {"error": "invalid_request", "state": state})

    if request.method == "GET":
        default_page()
        return render(
            request,
            "manychat_sandbox/consent.html",
            {"pages": SandboxPage.objects.order_by("pk"), "params": params.items()},
        )
    if request.POST.get("decision") != "approve":
        return _redirect_with(redirect_uri, {"error": "access_denied", "state": state})
    page = SandboxPage.objects.filter(pk=request.POST.get("page") or 0).first() or default_page()
    code = SandboxAuthorizationCode.objects.create(
        code=secrets.token_urlsafe(32),
        page=page,
        client_id=client_id,
        redirect_uri=redirect_uri,
        scope=params.get("scope", ""),
        code_challenge=challenge,
        code_challenge_method=method if challenge else "",
    )
    return _redirect_with(redirect_uri, {"code": code.code, "state": state})


def oauth_error(error: str, status: int = 400) -> JsonResponse:
    response = JsonResponse({"error": error}, status=status)
    response["Cache-Control"] = "no-store"
    if error == "invalid_client":
        response["WWW-Authenticate"] = 'Basic realm="manychat-sandbox"'
    return response


def _client_credentials(request: HttpRequest) -> tuple[str, str]:
    header = request.META.get("HTTP_AUTHORIZATION", "")
    if header.startswith("Basic "):
        try:
            decoded = base64.b64decode(header[6:]).decode()
        except ValueError:
            return "", ""
        client_id, _, secret = decoded.partition(":")
        return unquote(client_id), unquote(secret)
    return request.POST.get("client_id", ""), request.POST.get("client_secret", "")


@csrf_exempt
@never_cache
@require_POST
@with_faults("token")
def token(request: HttpRequest, plan: FaultPlan) -> HttpResponseBase:
    """The token endpoint: authorization_code and refresh_token grants."""
    client_id, secret = _client_credentials(request)
    expected_id, expected_secret = expected_client()
    if not (
        client_id
        and hmac.compare_digest(client_id.encode(), expected_id.encode())
        and hmac.compare_digest(secret.encode(), expected_secret.encode())
    ):
        return oauth_error("invalid_client", 401)
    grant_type = request.POST.get("grant_type")
    if grant_type == "authorization_code":
        response = _grant_code(request, client_id)
    elif grant_type == "refresh_token":
        response = _grant_refresh(request, client_id)
    else:
        response = oauth_error("unsupported_grant_type")
    return plan.deliver(response)


def _grant_code(request: HttpRequest, client_id: str) -> HttpResponse:
    value = request.POST.get("code", "")
    now = timezone.now()
    # Claim the code with one conditional UPDATE: single-use even under races.
    claimed = SandboxAuthorizationCode.objects.filter(
        code=value, used_at__isnull=True, created_at__gte=now - CODE_LIFETIME
    ).update(used_at=now)
    if not claimed:
        return oauth_error("invalid_grant")
    code = SandboxAuthorizationCode.objects.select_related("page").get(code=value)
    if code.client_id != client_id or code.redirect_uri != request.POST.get("redirect_uri", ""):
        return oauth_error("invalid_grant")
    if code.code_challenge:
        verifier = request.POST.get("code_verifier", "")
        if not verifier or not hmac.compare_digest(code_challenge(verifier), code.code_challenge):
            return oauth_error("invalid_grant")
    return _issue(code.page, client_id, code.scope, parent=None)


def _grant_refresh(request: HttpRequest, client_id: str) -> HttpResponse:
    value = request.POST.get("refresh_token", "")
    if not value:
        return oauth_error("invalid_request")
    SandboxToken.objects.filter(refresh_token=value).update(refresh_uses=F("refresh_uses") + 1)
    claimed = SandboxToken.objects.filter(
        refresh_token=value, client_id=client_id, rotated_at__isnull=True, revoked=False
    ).update(rotated_at=timezone.now())
    if not claimed:
        return oauth_error("invalid_grant")
    old = SandboxToken.objects.select_related("page").get(refresh_token=value)
    return _issue(old.page, client_id, old.scope, parent=old)


def _issue(page: SandboxPage, client_id: str, scope: str, *, parent: SandboxToken | None) -> JsonResponse:
    lifetime = token_lifetime()
    issued = SandboxToken.objects.create(
        page=page,
        client_id=client_id,
        access_token="sbx_at_" + secrets.token_urlsafe(32),
        refresh_token="sbx_rt_" + secrets.token_urlsafe(32),
        scope=scope,
        expires_at=timezone.now() + dt.timedelta(seconds=lifetime),
        parent=parent,
    )
    response = JsonResponse(
        {
            "access_token": issued.access_token,
            "token_type": "Bearer",
            "expires_in": lifetime,
            "refresh_token": issued.refresh_token,
            "scope": scope,
        }
    )
    response["Cache-Control"] = "no-store"
    return response


def manychat_error(message: str, status: int, details: Any = None) -> JsonResponse:
    return JsonResponse({"status": "error", "message": message, "details": details or []}, status=status)


def page_for_credential(credential: str) -> SandboxPage | None:
    now = timezone.now()
    issued = SandboxToken.objects.select_related("page").filter(access_token=credential, revoked=False).first()
    if issued is not None:
        return issued.page if issued.expires_at > now else None
    key = SandboxApiKey.objects.select_related("page").filter(key=credential, revoked_at__isnull=True).first()
    if key is not None:
        return key.page
    app = SandboxAppInstall.objects.select_related("page").filter(key=credential, uninstalled_at__isnull=True).first()
    return app.page if app is not None else None


def is_uninstalled_app_key(credential: str) -> bool:
    return SandboxAppInstall.objects.filter(key=credential, uninstalled_at__isnull=False).exists()


@csrf_exempt
@never_cache
@require_GET
@with_faults("getinfo")
def get_info(request: HttpRequest, plan: FaultPlan) -> HttpResponseBase:
    """``GET /fb/page/getInfo`` with ``Authorization: Bearer <token or API key>``."""
    header = request.META.get("HTTP_AUTHORIZATION", "")
    credential = header[7:].strip() if header.startswith("Bearer ") else ""
    page = page_for_credential(credential) if credential else None
    if page is None and credential and is_uninstalled_app_key(credential):
        # What Manychat answers to every call made with the key of an uninstalled app.
        return JsonResponse({"status": "exception", "message": "Something went wrong"}, status=500)
    if page is None:
        return manychat_error("Wrong token", 401)
    return plan.deliver(JsonResponse({"status": "success", "data": page.as_info()}))
