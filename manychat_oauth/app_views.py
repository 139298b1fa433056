"""Views for Manychat App Store installs: the endpoint Manychat calls, and manual App Key capture."""

from __future__ import annotations

import hmac
import json
import logging

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect, JsonResponse
from django.shortcuts import render, resolve_url
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.debug import sensitive_post_parameters, sensitive_variables
from django.views.decorators.http import require_http_methods

from . import api, services
from .app_install import AppInstallRefused, install, parse_install_request
from .conf import app_settings
from .exceptions import ManychatAPIError, ProviderUnavailable
from .models import ManychatConnection
from .views import API_KEY_ATTEMPTS, api_key_attempt_allowed

logger = logging.getLogger(__name__)

#: Install requests are a few hundred bytes; anything much larger is not Manychat.
MAX_INSTALL_BODY_BYTES = 16 * 1024


def json_error(message: str, status: int) -> JsonResponse:
    return JsonResponse({"status": "error", "message": message}, status=status)


@csrf_exempt
@never_cache
@sensitive_variables("secret", "given", "payload", "install_request")
def app_install(request: HttpRequest) -> HttpResponse:
    """Manychat POSTs the App Key here right after a user installs the app.

    No login and no CSRF token (Manychat's server calls it): the request is
    authenticated by the shared secret header and tied to a site user by the
    link code in the payload.
    """
    if request.method != "POST":
        response = json_error("Use POST.", 405)
        response["Allow"] = "POST"
        return response
    secret = app_settings.APP_INSTALL_SECRET
    if not secret:
        logger.warning("App install refused: MANYCHAT_OAUTH_APP_INSTALL_SECRET is not set.")
        return json_error("App installs are not set up on this site yet.", 503)
    given = request.headers.get(app_settings.APP_INSTALL_SECRET_HEADER, "")
    if not hmac.compare_digest(given.encode(), secret.encode()):
        logger.warning("App install refused: wrong or missing %s header.", app_settings.APP_INSTALL_SECRET_HEADER)
        return json_error("This request is not authorized.", 403)
    try:
        length = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        length = -1
    if length < 0 or length > MAX_INSTALL_BODY_BYTES:
        return json_error("The request body is too large.", 413)
    try:
        payload = json.loads(request.body)
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        return json_error("The request body is not valid JSON.", 400)
    try:
        install_request = parse_install_request(payload, request.headers.get(app_settings.APP_TOKEN_HEADER))
        connection, _replayed = install(install_request)
    except AppInstallRefused as exc:
        return json_error(exc.message, exc.status)
    return JsonResponse(
        {"status": "success", "message": f"Connected {connection.page_name or 'your page'}. You can close this window."}
    )


class AppKeyForm(forms.Form):
    app_key = forms.CharField(
        label="App Key",
        max_length=1000,
        strip=True,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "off"}),
        help_text="Manychat shows it after you install our app.",
    )

    def clean_app_key(self) -> str:
        key: str = self.cleaned_data["app_key"]
        if any(ch.isspace() or not ch.isprintable() for ch in key):
            raise forms.ValidationError("An App Key has no spaces: copy it again from Manychat.")
        return key


@sensitive_post_parameters("app_key")
@never_cache
@login_required
@require_http_methods(["GET", "POST"])
@sensitive_variables("key")
def connect_app_key(request: HttpRequest) -> HttpResponse:
    """GET: a form for an App Key Manychat showed the user. POST: verify it and save an App connection."""
    form = AppKeyForm(request.POST or None)
    if request.method == "POST" and not api_key_attempt_allowed(request.user):
        # The same per-user budget as the API-key form: neither may be used to try keys or hammer Manychat.
        logger.warning("App Key attempts of user %s rate-limited.", request.user.pk)
        error = f"Too many attempts: you can try {API_KEY_ATTEMPTS} keys a minute. Wait a minute, then try again."
        return render(
            request, "manychat_oauth/connect_app_key.html", {"form": AppKeyForm(), "error": error}, status=429
        )
    if request.method == "POST" and form.is_valid():
        key = form.cleaned_data["app_key"]
        try:
            page = api.page_fields(api.get_page_info(key))
        except ProviderUnavailable as exc:
            logger.warning("App Key check failed (%s).", exc.code)
            form.add_error(
                "app_key",
                "Manychat answered as if this app were uninstalled, or is not answering. "
                "Check that the app is installed and try again in a few minutes.",
            )
        except ManychatAPIError as exc:
            logger.warning("App Key refused by Manychat (%s).", exc.code)
            form.add_error("app_key", "Manychat did not accept this App Key. Copy it again from Manychat.")
        else:
            connection, _created = services.save_connection(
                request.user, auth_type=ManychatConnection.AuthType.APP, access_token=key, page=page
            )
            messages.success(request, f"Connected to {connection.page_name or 'your Manychat page'}.")
            return HttpResponseRedirect(resolve_url(app_settings.CONNECTED_URL))
    status = 400 if request.method == "POST" else 200
    return render(request, "manychat_oauth/connect_app_key.html", {"form": form}, status=status)
