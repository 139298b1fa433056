"""No secret ever appears in logs, pages, command output, exception messages or reprs.

Every flow runs against the sandbox over real HTTP with every logger captured at
DEBUG (``all_logs``). The secrets searched for are the real ones of the run:
the client secret, every authorization code and token the sandbox issued, and
every PKCE verifier the app generated. Faults make the provider echo those
secrets back in its error bodies, to prove that bodies are never passed on.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import re
import secrets
from collections.abc import Callable
from typing import Any

import pytest
from django.core.cache import cache
from django.core.management import call_command
from django.db import connection as db_connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from manychat_oauth import client, services
from manychat_oauth.api import ManychatClient
from manychat_oauth.exceptions import ManychatOAuthError
from manychat_oauth.models import ManychatConnection
from manychat_oauth.sandbox.models import (
    SandboxApiKey,
    SandboxAppInstall,
    SandboxAuthorizationCode,
    SandboxPage,
    SandboxToken,
)
from manychat_oauth.views import SESSION_KEY

from .conftest import Sandbox, closed_port, start_flow
from .hygiene import CapturedLogs, assert_no_secrets

CLIENT_SECRET = "test-client-secret-5f2b9c"  # tests/settings.py


class Evidence:
    """Everything a secret could leak into during one test."""

    def __init__(self, logs: CapturedLogs) -> None:
        self.logs = logs
        self.items: list[Any] = []
        self.verifiers: list[str] = []
        #: Secrets the sandbox does not know: keys users typed, secrets sent to the install endpoint.
        self.extra: dict[str, str] = {}

    def response(self, response: Any) -> Any:
        self.items += [response.content, dict(response.items())]
        return response

    def add(self, *things: Any) -> None:
        self.items.extend(things)

    def start(self, client: Client, next_url: str | None = None) -> str:
        """POST connect; remember the PKCE verifier of the new flow."""
        before = set((client.session.get(SESSION_KEY) or {}).keys())
        url = start_flow(client, next_url)
        flows = client.session[SESSION_KEY]
        self.verifiers += [flows[s]["verifier"] for s in set(flows) - before if flows[s]["verifier"]]
        self.add(url)
        return url

    def secrets(self) -> dict[str, str]:
        found = {"client secret": CLIENT_SECRET}
        for i, verifier in enumerate(self.verifiers):
            found[f"PKCE verifier {i}"] = verifier
        for code in SandboxAuthorizationCode.objects.all():
            found[f"authorization code {code.pk}"] = code.code
        for token in SandboxToken.objects.all():
            found[f"access token {token.pk}"] = token.access_token
            if token.refresh_token:
                found[f"refresh token {token.pk}"] = token.refresh_token
        for key in SandboxApiKey.objects.all():
            found[f"API key {key.pk}"] = key.key
        for install in SandboxAppInstall.objects.all():
            found[f"App Key {install.pk}"] = install.key
        return {**found, **self.extra}

    def check(self) -> None:
        assert self.logs.records, "nothing was logged: capture is broken"
        rows = list(ManychatConnection.objects.all())
        stored = [text for row in rows for text in (row.last_error, repr(row), str(row))]
        assert_no_secrets([*self.logs.texts(), *self.items, *stored], self.secrets())


@pytest.fixture
def evidence(all_logs: CapturedLogs) -> Evidence:
    return Evidence(all_logs)


def callback(client: Client, query: dict[str, str]) -> Any:
    return client.get("/manychat/callback/", query)


def echo(query: dict[str, str], **payload: Any) -> dict[str, Any]:
    """A provider error body that repeats our secrets back."""
    return {
        "error_description": f"code {query.get('code')} client_secret {CLIENT_SECRET}",
        "code": query.get("code"),
        **payload,
    }


# -- OAuth connect + callback --------------------------------------------------


def test_a_successful_connection_leaks_nothing(sandbox, user_client, evidence):
    query = sandbox.consent(evidence.start(user_client, next_url="/after/"))
    evidence.response(callback(user_client, query))
    evidence.response(user_client.get("/manychat/connections/"))
    connection = ManychatConnection.objects.get()
    assert connection.access_token and connection.refresh_token
    assert any("OAuth flow started" in m for m in evidence.logs.messages)
    evidence.check()


TOKEN_FAULTS: dict[str, Callable[[dict[str, str]], dict[str, Any]]] = {
    "500-echoing-json": lambda q: {"status": 500, "body": echo(q, error="server_error")},
    "502-html-echoing": lambda q: {
        "status": 502,
        "body": f"<html>{q['code']} {CLIENT_SECRET}</html>",
        "content_type": "text/html",
    },
    "503-retry-after": lambda q: {"status": 503, "body": echo(q), "retry_after": "30"},
    "429": lambda q: {"status": 429, "body": echo(q), "retry_after": "Wed, 21 Oct 2015 07:28:00 GMT"},
    "400-echoing": lambda q: {"status": 400, "body": echo(q, error="invalid_request")},
    "400-error-is-our-code": lambda q: {"status": 400, "body": {"error": q["code"]}},
    "401-echoing": lambda q: {"status": 401, "body": echo(q, error="invalid_client")},
    "200-not-json": lambda q: {"status": 200, "body": f"access_token={q['code']}", "content_type": "text/plain"},
    "200-no-access-token": lambda q: {"status": 200, "body": {"refresh_token": q["code"], "token_type": "Bearer"}},
    "read-timeout": lambda q: {"status": 504, "latency_ms": 1500, "body": echo(q)},
}


@pytest.mark.parametrize("fault", TOKEN_FAULTS.values(), ids=TOKEN_FAULTS.keys())
def test_a_failed_code_exchange_leaks_nothing_even_when_the_provider_echoes_secrets(
    sandbox, user_client, evidence, settings, fault
):
    settings.MANYCHAT_OAUTH_HTTP_TIMEOUT = 0.5
    query = sandbox.consent(evidence.start(user_client))
    sandbox.fault("token", times=1, **fault(query))
    response = evidence.response(callback(user_client, query))
    assert response.status_code in (400, 502, 503)  # exact statuses: tests/test_fault_matrix.py
    assert not ManychatConnection.objects.exists()
    evidence.check()


def test_provider_refusals_leak_nothing(sandbox, user_client, evidence, settings):
    # invalid_grant (tampered code), invalid_grant (wrong PKCE verifier), invalid_client, denial, error.
    query = sandbox.consent(evidence.start(user_client))
    evidence.response(callback(user_client, {**query, "code": query["code"][:-1]}))

    query = sandbox.consent(evidence.start(user_client))
    session = user_client.session
    session[SESSION_KEY][query["state"]]["verifier"] = "wrong-verifier-" + "w" * 40
    session.save()
    evidence.response(callback(user_client, query))

    query = sandbox.consent(evidence.start(user_client))
    settings.MANYCHAT_SANDBOX_CLIENT_SECRET = "another-secret-entirely"
    evidence.response(callback(user_client, query))
    del settings.MANYCHAT_SANDBOX_CLIENT_SECRET

    evidence.response(callback(user_client, sandbox.consent(evidence.start(user_client), decision="deny")))
    state = sandbox.consent(evidence.start(user_client))["state"]
    evidence.response(callback(user_client, {"state": state, "error": "server_error", "error_description": "x"}))
    assert not ManychatConnection.objects.exists()
    evidence.check()


def test_replayed_and_forged_callbacks_leak_nothing(sandbox, user_client, evidence):
    query = sandbox.consent(evidence.start(user_client))
    evidence.response(callback(user_client, query))
    assert evidence.response(callback(user_client, query)).status_code == 400
    assert evidence.response(callback(user_client, {**query, "state": "forged-state"})).status_code == 400
    evidence.check()


def test_a_failed_get_info_after_connecting_leaks_nothing(sandbox, user_client, evidence):
    query = sandbox.consent(evidence.start(user_client))
    sandbox.fault("getinfo", status=500, times=1, body={"status": "exception", "message": query["code"]})
    assert evidence.response(callback(user_client, query)).status_code == 302
    evidence.check()


def test_a_connection_refused_during_the_exchange_leaks_nothing(sandbox, user_client, evidence, settings):
    query = sandbox.consent(evidence.start(user_client))
    settings.MANYCHAT_OAUTH_TOKEN_URL = f"http://127.0.0.1:{closed_port()}/oauth/token"
    assert evidence.response(callback(user_client, query)).status_code == 502
    evidence.check()


# -- refresh command at verbosity 3 --------------------------------------------


def connect(sandbox: Sandbox, user_client: Client, evidence: Evidence) -> ManychatConnection:
    query = sandbox.consent(evidence.start(user_client))
    assert evidence.response(callback(user_client, query)).status_code == 302
    connection = ManychatConnection.objects.get()
    ManychatConnection.objects.filter(pk=connection.pk).update(expires_at=timezone.now() - dt.timedelta(minutes=1))
    return connection


def run_refresh(evidence: Evidence, *args: str) -> int:
    out, err = io.StringIO(), io.StringIO()
    try:
        call_command("manychat_refresh_tokens", *args, verbosity=3, stdout=out, stderr=err)
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    evidence.add(out.getvalue(), err.getvalue())
    return code


REFRESH_FAULTS: dict[str, Callable[[str], dict[str, Any]]] = {
    "500-echoing": lambda rt: {"status": 500, "body": {"error": "server_error", "error_description": rt}},
    "502-html-echoing": lambda rt: {
        "status": 502,
        "body": f"<html>{rt} {CLIENT_SECRET}</html>",
        "content_type": "text/html",
    },
    "503-retry-after": lambda rt: {"status": 503, "body": rt, "retry_after": "120", "content_type": "text/plain"},
    "429": lambda rt: {"status": 429, "body": {"error": "slow_down", "refresh_token": rt}},
    "400-invalid-grant-echoing": lambda rt: {
        "status": 400,
        "body": {"error": "invalid_grant", "error_description": rt},
    },
    "400-error-is-our-refresh-token": lambda rt: {"status": 400, "body": {"error": rt}},
    "401-invalid-client-echoing": lambda rt: {
        "status": 401,
        "body": {"error": "invalid_client", "hint": CLIENT_SECRET},
    },
    "200-not-json": lambda rt: {"status": 200, "body": f"refresh_token={rt}", "content_type": "text/plain"},
    "200-no-access-token": lambda rt: {"status": 200, "body": {"refresh_token": rt}},
    "read-timeout": lambda rt: {"status": 504, "latency_ms": 1500, "body": rt, "content_type": "text/plain"},
}


@pytest.mark.parametrize("fault", REFRESH_FAULTS.values(), ids=REFRESH_FAULTS.keys())
def test_a_failed_refresh_leaks_nothing_at_verbosity_3(sandbox, user_client, evidence, settings, fault):
    settings.MANYCHAT_OAUTH_HTTP_TIMEOUT = 0.5
    connection = connect(sandbox, user_client, evidence)
    old_refresh_token = connection.refresh_token
    sandbox.fault("token", times=3, **fault(old_refresh_token))
    assert run_refresh(evidence) != 0
    run_refresh(evidence, "--all", "--json")
    connection.refresh_from_db()
    assert connection.refresh_token == old_refresh_token  # never lost
    with pytest.raises(ManychatOAuthError) as excinfo:
        connection.get_access_token()
    evidence.add(excinfo.value)
    evidence.check()


def test_a_successful_refresh_and_real_refusals_leak_nothing(sandbox, user_client, evidence, settings):
    connection = connect(sandbox, user_client, evidence)
    assert run_refresh(evidence) == 0
    assert run_refresh(evidence, "--all", "--json", "--concurrency", "1") == 0
    assert run_refresh(evidence, "--dry-run", "--all") == 0
    connection.refresh_from_db()
    assert connection.get_access_token() == SandboxToken.objects.latest("pk").access_token

    settings.MANYCHAT_SANDBOX_CLIENT_SECRET = "another-secret-entirely"  # invalid_client, for real
    assert run_refresh(evidence, "--all") == 2
    del settings.MANYCHAT_SANDBOX_CLIENT_SECRET

    SandboxToken.objects.update(revoked=True)  # invalid_grant, for real
    assert run_refresh(evidence, "--all") == 1
    connection.refresh_from_db()
    assert connection.status == ManychatConnection.Status.REAUTH_REQUIRED
    with pytest.raises(ManychatOAuthError) as excinfo:
        connection.get_access_token()
    evidence.add(excinfo.value)
    evidence.check()


def test_a_refused_connection_during_refresh_leaks_nothing(sandbox, user_client, evidence, settings):
    connect(sandbox, user_client, evidence)
    settings.MANYCHAT_OAUTH_TOKEN_URL = f"http://127.0.0.1:{closed_port()}/oauth/token"
    assert run_refresh(evidence, "--json") == 1
    evidence.check()


# -- reprs, strings, exceptions and SQL -------------------------------------


AT = "access-token-4b8e9a1f"
RT = "refresh-token-7d2c0e3b"


def test_model_and_token_response_reprs_hide_the_tokens(user):
    connection = ManychatConnection.objects.create(user=user, page_id="1", access_token=AT, refresh_token=RT)
    tokens = client.TokenResponse(
        access_token=AT, refresh_token=RT, token_type="Bearer", expires_in=60, scope="", received_at=timezone.now()
    )
    assert_no_secrets(
        [repr(connection), str(connection), repr(tokens), str(tokens), repr(vars(tokens).keys())], [AT, RT]
    )
    assert "Bearer" in repr(tokens) and "pk=" in repr(connection)


def test_only_ciphertext_reaches_the_database(user, settings):
    settings.DEBUG = True
    with CaptureQueriesContext(db_connection) as queries:
        connection, _ = services.save_connection(
            user, auth_type="oauth", access_token=AT, refresh_token=RT, page={"page_id": "42"}
        )
        ManychatConnection.objects.filter(pk=connection.pk).update(access_token=AT + "-2")
        services.disconnect(ManychatConnection.objects.get(pk=connection.pk))
    assert len(queries) >= 3
    assert_no_secrets([q["sql"] for q in queries.captured_queries], [AT, RT, AT + "-2"])


def test_the_helper_finds_secrets_in_every_usual_encoding(all_logs):
    import logging

    secret = "s3cret/value+with&odd=chars"
    quiet = logging.getLogger("tests.hygiene.quiet")
    quiet.propagate = False  # records that never reach the root logger are captured too
    try:
        quiet.debug("hidden %s", json.dumps({"v": "s3cret/value+with&odd=chars"}))
    finally:
        quiet.propagate = True
    with pytest.raises(AssertionError, match="leaked"):
        assert_no_secrets(all_logs.texts(), [secret])
    for encoded in ("s3cret%2Fvalue%2Bwith%26odd%3Dchars", "s3cret/value+with&amp;odd=chars"):
        with pytest.raises(AssertionError, match="leaked"):
            assert_no_secrets([encoded], [secret])
    with pytest.raises(AssertionError, match="too short"):
        assert_no_secrets(["x"], ["short"])
    assert_no_secrets(["nothing here"], {"label": secret, "unset": None})


def test_an_error_report_for_a_crash_after_connecting_shows_no_secret(sandbox, user, evidence):
    """A site's receiver crashes: the 500 error report (admin email) shows no code, verifier or token."""
    from django.views.debug import ExceptionReporter

    from manychat_oauth.signals import connection_connected

    def crash(**kwargs: Any) -> None:
        raise RuntimeError("receiver bug")

    browser = Client(raise_request_exception=False)
    browser.force_login(user)
    query = sandbox.consent(evidence.start(browser))
    connection_connected.connect(crash, dispatch_uid="t-crash")
    try:
        assert evidence.response(callback(browser, query)).status_code == 500
    finally:
        connection_connected.disconnect(dispatch_uid="t-crash")
    # Only this request's record: a live-server thread left over from an
    # earlier test may log its own errors meanwhile.
    [record] = [
        r
        for r in evidence.logs.records
        if r.name == "django.request" and r.levelname == "ERROR" and "/manychat/callback/" in r.getMessage()
    ]
    reporter = ExceptionReporter(record.request, *record.exc_info, is_email=True)
    text, page = reporter.get_traceback_text(), reporter.get_traceback_html()
    assert "receiver bug" in text and "save_connection" in text
    evidence.add(text, page)
    evidence.check()


def test_key_rotation_output_and_logs_show_no_token_even_for_rows_it_cannot_read(user, all_logs, settings):
    from cryptography.fernet import Fernet
    from django.core.management.base import CommandError

    old, new, lost = (Fernet.generate_key().decode() for _ in range(3))
    settings.MANYCHAT_OAUTH_FERNET_KEYS = [lost]
    ManychatConnection.objects.create(user=user, page_id="lost", access_token=AT + "-lost")
    settings.MANYCHAT_OAUTH_FERNET_KEYS = [old]
    ManychatConnection.objects.create(user=user, page_id="1", access_token=AT, refresh_token=RT)
    settings.MANYCHAT_OAUTH_FERNET_KEYS = [new, old]
    out, err = io.StringIO(), io.StringIO()
    with pytest.raises(CommandError) as dry:
        call_command("manychat_rotate_keys", "--dry-run", verbosity=3, stdout=out, stderr=err)
    with pytest.raises(CommandError) as excinfo:
        call_command("manychat_rotate_keys", "--batch-size", "1", verbosity=3, stdout=out, stderr=err)
    haystacks = [out.getvalue(), err.getvalue(), dry.value, excinfo.value, *all_logs.texts()]
    assert "re-encrypted 1" in out.getvalue()
    assert_no_secrets(haystacks, {"access token": AT, "refresh token": RT, "unreadable token": AT + "-lost"})
    assert_no_secrets(haystacks, {"old key": old, "new key": new, "lost key": lost})


# -- API-key connect -------------------------------------------------------------

API_KEY_URL = "/manychat/api-key/"


def sandbox_page(page_id: str = "4000004", name: str = "Hygiene Bakery") -> SandboxPage:
    return SandboxPage.objects.get_or_create(page_id=page_id, defaults={"name": name})[0]


def sandbox_key(page: SandboxPage) -> str:
    return SandboxApiKey.objects.create(page=page, key=f"{page.page_id}:{secrets.token_hex(16)}").key


@pytest.fixture
def fresh_rate_limit() -> Any:
    cache.clear()
    yield
    cache.clear()


def post_key(browser: Client, evidence: Evidence, key: str) -> Any:
    response = evidence.response(browser.post(API_KEY_URL, {"api_key": key}))
    if response.context and "form" in response.context:
        form = response.context["form"]
        evidence.add(repr(form), form.errors.as_json(), repr(form.errors))
    return response


def test_api_key_connect_leaks_nothing_on_success_or_any_error(
    sandbox, user_client, evidence, settings, fresh_rate_limit
):
    good = sandbox_key(sandbox_page())
    assert post_key(user_client, evidence, good).status_code == 302
    evidence.response(user_client.get("/manychat/connections/"))

    wrong_shape = "sk_live_" + "q" * 30 + " pasted with spaces"
    unknown = f"4000004:{'9' * 32}"
    evidence.extra.update({"wrong-shape key": wrong_shape, "unknown key": unknown})
    assert post_key(user_client, evidence, wrong_shape).status_code == 400
    assert post_key(user_client, evidence, unknown).status_code == 400
    # Manychat refuses and repeats the key in its message, then is down and repeats it again.
    sandbox.fault("getinfo", times=1, status=400, body={"status": "error", "message": f"Key {good} is not PRO"})
    assert post_key(user_client, evidence, good).status_code == 400
    sandbox.fault("getinfo", times=1, status=500, body={"status": "exception", "message": good, "key": good})
    assert post_key(user_client, evidence, good).status_code == 503
    sandbox.fault("getinfo", times=1, status=429, body=good, content_type="text/plain", retry_after="5")
    assert post_key(user_client, evidence, good).status_code == 503
    base = settings.MANYCHAT_OAUTH_API_BASE_URL
    settings.MANYCHAT_OAUTH_API_BASE_URL = f"http://127.0.0.1:{closed_port()}"
    assert post_key(user_client, evidence, good).status_code == 503
    settings.MANYCHAT_OAUTH_API_BASE_URL = base
    statuses = [post_key(user_client, evidence, unknown).status_code for _ in range(10)]
    assert statuses[-1] == 429  # rate-limited
    assert any("rate-limited" in m for m in evidence.logs.messages)
    evidence.check()


# -- App installs and manual App Keys --------------------------------------------

INSTALL_SECRET = "install-secret-hygiene-8c3f1a"


def shown_link_code(browser: Client) -> str:
    match = re.search(rb'id="mc-link-code"[^>]*>([A-Z0-9-]+)<', browser.get("/manychat/connections/").content)
    assert match, "no link code on the connections page"
    return match.group(1).decode()


def test_app_installs_and_manual_app_keys_leak_nothing(sandbox, user_client, evidence, settings):
    from manychat_oauth.app_install import InstallRequest, parse_install_request
    from manychat_oauth.sandbox.app_store import create_install, install_app, send_install_request, uninstall_app

    settings.MANYCHAT_OAUTH_APP_INSTALL_SECRET = INSTALL_SECRET
    wrong_secret = "wrong-install-secret-0d9e2b"
    evidence.extra.update({"install secret": INSTALL_SECRET, "wrong install secret": wrong_secret})
    url = f"{sandbox.server_url}/manychat/app/install/"
    page = sandbox_page("4000005", "Hygiene Florist")
    code = shown_link_code(user_client)
    calls = []

    calls.append(ok := install_app(page, url=url, secret=INSTALL_SECRET, link_code=code))
    assert ok.status_code == 200
    calls.append(send_install_request(ok.install, url=url, secret=INSTALL_SECRET, link_code=code))  # replay
    assert calls[-1].status_code == 200
    calls.append(install_app(page, url=url, secret=wrong_secret, link_code=code))
    assert calls[-1].status_code == 403
    calls.append(install_app(page, url=url, secret=INSTALL_SECRET, link_code="ABCD-EFGH"))  # bad code
    assert calls[-1].status_code == 400
    calls.append(install_app(page, url=url, secret=INSTALL_SECRET, link_code=code))  # used code, new key
    assert calls[-1].status_code == 400
    calls.append(
        install_app(page, url=url, secret=INSTALL_SECRET, link_code=shown_link_code(user_client), token_in="both")
    )
    assert calls[-1].status_code == 200
    sandbox.fault("getinfo", times=1, status=500, body={"status": "exception", "message": "x", "echo": ok.install.key})
    calls.append(install_app(page, url=url, secret=INSTALL_SECRET, link_code=shown_link_code(user_client)))
    assert calls[-1].status_code == 502
    for call in calls:
        evidence.add(json.dumps(call.body), repr(call))
    parsed = parse_install_request({"app_token": ok.install.key, "link_code": code}, None)
    evidence.add(repr(parsed), repr(InstallRequest(app_token=ok.install.key, link_code=code)))

    # Manual capture: a working key, an unknown key, an uninstalled app's key, Manychat down.
    manual = create_install(sandbox_page("4000006", "Hygiene Garage"))
    unknown = "unknown-app-key-" + "z" * 20
    evidence.extra["unknown App Key"] = unknown
    for key, status in ((manual.key, 302), (unknown, 400)):
        assert evidence.response(user_client.post("/manychat/app/key/", {"app_key": key})).status_code == status
    uninstall_app(manual.page)
    assert evidence.response(user_client.post("/manychat/app/key/", {"app_key": manual.key})).status_code == 400
    assert ManychatConnection.objects.filter(auth_type="app").count() == 2  # one per page
    evidence.response(user_client.get("/manychat/connections/"))
    evidence.check()
    # The link codes are shown to their user on purpose, but never logged.
    assert_no_secrets(evidence.logs.texts(), {"link code": code, "link code, no dash": code.replace("-", "")})


# -- The admin --------------------------------------------------------------------

CHANGELIST = "/admin/manychat_oauth/manychatconnection/"


def admin_action(admin: Client, evidence: Evidence, action: str, rows: list[int], **extra: str) -> Any:
    data = {"action": action, "_selected_action": rows, "index": 0, **extra}
    return evidence.response(admin.post(CHANGELIST, data, follow=True))


def test_admin_pages_and_every_action_leak_nothing(sandbox, user_client, admin_client, evidence, fresh_rate_limit):
    from manychat_oauth.sandbox.app_store import create_install

    oauth = connect(sandbox, user_client, evidence)
    key = sandbox_key(sandbox_page())
    assert post_key(user_client, evidence, key).status_code == 302
    app_key = create_install(sandbox_page("4000005", "Hygiene Florist")).key
    user = oauth.user
    services.save_connection(user, auth_type="app", access_token=app_key, page={"page_id": "4000005"})
    pks = list(ManychatConnection.objects.values_list("pk", flat=True))
    assert len(pks) == 3

    def pages() -> None:
        for query in ("", "?q=Hygiene", "?health=healthy", "?status__exact=active", "?o=1"):
            assert evidence.response(admin_client.get(CHANGELIST + query)).status_code == 200
        for pk in pks:
            for suffix in ("change/", "history/", "delete/"):
                assert evidence.response(admin_client.get(f"{CHANGELIST}{pk}/{suffix}")).status_code == 200

    pages()
    admin_action(admin_client, evidence, "refresh_tokens_now", pks)
    admin_action(admin_client, evidence, "check_connections", pks)
    # The provider fails and echoes secrets back.
    refresh_token = ManychatConnection.objects.get(pk=oauth.pk).refresh_token
    sandbox.fault("token", times=1, status=500, body={"error": "server_error", "error_description": refresh_token})
    admin_action(admin_client, evidence, "refresh_tokens_now", pks)
    sandbox.fault("getinfo", times=3, status=401, body={"status": "error", "message": f"Wrong token {key} {app_key}"})
    admin_action(admin_client, evidence, "check_connections", pks)
    admin_action(admin_client, evidence, "mark_reauth_required", pks)
    admin_action(admin_client, evidence, "disconnect_connections", pks)
    admin_action(admin_client, evidence, "disconnect_connections", pks, confirmed="yes")
    assert not ManychatConnection.objects.exclude(status="disconnected").exists()
    pages()
    evidence.check()


# -- The refresh command's health checks at verbosity 3 ------------------------------


def test_health_checks_in_the_refresh_command_leak_nothing_at_verbosity_3(sandbox, user, evidence):
    from manychat_oauth.sandbox.app_store import create_install, uninstall_app

    key = sandbox_key(sandbox_page())
    install = create_install(sandbox_page("4000005", "Hygiene Florist"))
    services.save_connection(user, auth_type="api_key", access_token=key, page={"page_id": "4000004"})
    services.save_connection(user, auth_type="app", access_token=install.key, page={"page_id": "4000005"})
    assert run_refresh(evidence, "--all") == 0
    echo = {"status": "error", "message": f"Wrong token {key} {install.key}"}
    for fault in (
        {"status": 500, "body": {"status": "exception", "message": install.key}},
        {"status": 400, "body": echo},
        {"status": 200, "body": f"{key} {install.key}", "content_type": "text/plain"},
        {"status": 401, "body": echo},
    ):
        sandbox.fault("getinfo", times=2, **fault)
        assert run_refresh(evidence, "--all", "--json") == 1
        assert run_refresh(evidence, "--all") in (0, 1)
    uninstall_app(install.page)
    run_refresh(evidence, "--all")
    assert ManychatConnection.objects.filter(status="reauth_required").exists()
    for row in ManychatConnection.objects.all():
        with pytest.raises(ManychatOAuthError) as excinfo:
            ManychatClient(row).get_page_info()
        evidence.add(excinfo.value, repr(ManychatClient(row)))
    evidence.check()


def test_reprs_of_results_forms_and_clients_hide_secrets(user):
    from manychat_oauth.app_views import AppKeyForm
    from manychat_oauth.forms import ApiKeyForm
    from manychat_oauth.health import CheckResult
    from manychat_oauth.refresh import Outcome, RefreshResult

    key = "4000004:" + "k" * 32
    connection = ManychatConnection.objects.create(user=user, auth_type="api_key", page_id="4", access_token=key)
    app_form = AppKeyForm({"app_key": key})
    assert app_form.is_valid()  # validated offline; the view checks the key with Manychat
    texts = [repr(ApiKeyForm({"api_key": key})), repr(app_form), str(app_form), str(ApiKeyForm())]
    texts += [repr(ManychatClient(connection)), repr(CheckResult(connection.pk, True, "active"))]
    texts += [repr(RefreshResult(connection.pk, Outcome.FAILED, "x", "http_500")), repr(connection), str(connection)]
    assert_no_secrets(texts, {"API key": key})


def error_reports(evidence: Evidence) -> list[str]:
    """The 500 error reports (as mailed to ADMINS, and the HTML page) of the crashes logged so far."""
    from django.views.debug import ExceptionReporter

    # Records with a traceback only: a live-server thread left over from an
    # earlier test may log its own plain errors meanwhile.
    crashes = [r for r in evidence.logs.records if r.name == "django.request" and r.levelname == "ERROR" and r.exc_info]
    reports = []
    for record in crashes:
        reporter = ExceptionReporter(getattr(record, "request", None), *record.exc_info, is_email=True)
        reports += [reporter.get_traceback_text(), reporter.get_traceback_html()]
    return reports


def test_error_reports_of_crashes_in_key_flows_show_no_secret(sandbox, user, evidence, settings, fresh_rate_limit):
    """A site's receiver crashes while a key is saved: the error reports show no key, App Key or install secret."""
    from manychat_oauth.sandbox.app_store import create_install, install_app
    from manychat_oauth.signals import connection_connected

    def crash(**kwargs: Any) -> None:
        raise RuntimeError("receiver bug")

    settings.MANYCHAT_OAUTH_APP_INSTALL_SECRET = INSTALL_SECRET
    evidence.extra["install secret"] = INSTALL_SECRET
    browser = Client(raise_request_exception=False)
    browser.force_login(user)
    code = shown_link_code(browser)
    connection_connected.connect(crash, dispatch_uid="t-crash-keys")
    try:
        assert post_key(browser, evidence, sandbox_key(sandbox_page())).status_code == 500
        app_key = create_install(sandbox_page("4000006", "Hygiene Garage")).key
        assert evidence.response(browser.post("/manychat/app/key/", {"app_key": app_key})).status_code == 500
        url = f"{sandbox.server_url}/manychat/app/install/"
        call = install_app(sandbox_page("4000005", "Hygiene Florist"), url=url, secret=INSTALL_SECRET, link_code=code)
        assert call.status_code == 500
    finally:
        connection_connected.disconnect(dispatch_uid="t-crash-keys")
    reports = error_reports(evidence)
    assert len(reports) == 6 and all("receiver bug" in r for r in reports)
    evidence.add(*reports)
    evidence.check()
    assert_no_secrets(reports, {"link code": code, "link code, no dash": code.replace("-", "")})


def crash_report(connection_pk: int) -> list[str]:
    """What Django mails for a site view that lets ``ManychatClient``'s error escape (this frame holds no secret)."""
    import sys

    from django.views.debug import ExceptionReporter

    try:
        ManychatClient(ManychatConnection.objects.get(pk=connection_pk)).request("GET", "/fb/page/getInfo")
    except ManychatOAuthError:
        reporter = ExceptionReporter(None, *sys.exc_info(), is_email=True)
        return [reporter.get_traceback_text(), reporter.get_traceback_html()]
    raise AssertionError("the fault did not fail the call")


def test_an_error_report_of_an_unhandled_api_error_in_a_site_view_shows_no_credential(sandbox, user, evidence):
    """A site lets a ``ManychatAPIError`` from ``ManychatClient`` escape: the 500 report hides the credential."""
    oauth = connect(sandbox, logged_in_client(user), evidence)
    key = sandbox_key(sandbox_page())
    app_key = SandboxAppInstall.objects.create(page=sandbox_page(), key="4000004:app" + "c" * 30).key
    pks = [
        oauth.pk,
        services.save_connection(user, auth_type="api_key", access_token=key, page={"page_id": "4000004"})[0].pk,
        services.save_connection(user, auth_type="app", access_token=app_key, page={"page_id": "4000005"})[0].pk,
    ]
    faults = [
        {"status": 401, "body": {"status": "error", "message": "Wrong token"}},  # refreshed, retried, refused again
        {"status": 400, "body": {"status": "error", "message": "Subscriber not found"}},
        {"status": 503},
    ]
    for pk, fault in zip(pks, faults, strict=True):
        sandbox.fault("getinfo", times=2, **fault)
        evidence.add(*crash_report(pk))
    assert len(evidence.items) >= 6 and "ManychatClient" in evidence.items[-1]
    evidence.check()


def logged_in_client(user: Any) -> Client:
    browser = Client()
    browser.force_login(user)
    return browser
