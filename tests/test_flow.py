"""The OAuth connect flow over real HTTP to the sandbox (live_server)."""

from __future__ import annotations

import time
from urllib.parse import parse_qs, urlsplit

import pytest
from django.test import Client

from manychat_oauth.models import ManychatConnection
from manychat_oauth.sandbox.models import SandboxAuthorizationCode, SandboxPage, SandboxToken
from manychat_oauth.signals import connection_connected, connection_disconnected
from manychat_oauth.views import SESSION_KEY

from .conftest import start_flow


def callback(client: Client, query: dict[str, str]):
    return client.get("/manychat/callback/", query)


def test_connect_page_has_a_connect_button(user_client):
    response = user_client.get("/manychat/connect/")
    assert response.status_code == 200
    assert b"Connect with Manychat" in response.content


def test_views_require_login(client, db):
    for url in ("/manychat/connect/", "/manychat/callback/?state=x", "/manychat/connections/"):
        response = client.get(url)
        assert response.status_code == 302
        assert response["Location"].startswith("/accounts/login/")


def test_authorize_url_carries_state_and_pkce(user_client, settings):
    settings.MANYCHAT_OAUTH_SCOPES = ["page:read", "subscribers:write"]
    url = start_flow(user_client)
    parts = urlsplit(url)
    assert f"{parts.scheme}://{parts.netloc}{parts.path}" == "https://manychat.com/oauth/authorize"
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    assert query["response_type"] == "code"
    assert query["client_id"] == "test-client"
    assert query["redirect_uri"] == "http://testserver/manychat/callback/"
    assert query["scope"] == "page:read subscribers:write"
    assert query["code_challenge_method"] == "S256"
    assert len(query["code_challenge"]) == 43
    assert len(query["state"]) >= 43  # 256 bits, url-safe base64
    flow = user_client.session[SESSION_KEY][query["state"]]
    assert flow["verifier"] and flow["user_id"]


def test_pkce_can_be_switched_off(user_client, settings):
    settings.MANYCHAT_OAUTH_USE_PKCE = False
    query = parse_qs(urlsplit(start_flow(user_client)).query)
    assert "code_challenge" not in query


def test_approve_creates_an_active_connection_with_page_details(sandbox, user, user_client):
    events = []
    connection_connected.connect(lambda **kw: events.append(kw), weak=False, dispatch_uid="t-connected")
    try:
        query = sandbox.consent(start_flow(user_client))
        response = callback(user_client, query)
    finally:
        connection_connected.disconnect(dispatch_uid="t-connected")
    assert response.status_code == 302
    assert response["Location"] == "/manychat/connections/"
    connection = ManychatConnection.objects.get(user=user)
    assert connection.status == "active"
    assert connection.auth_type == "oauth"
    assert connection.page_name == "Sandbox Coffee Shop"
    assert connection.page_id == "1000001"
    assert connection.access_token.startswith("sbx_at_")
    assert connection.refresh_token.startswith("sbx_rt_")
    assert connection.expires_at is not None
    assert [e["connection"].pk for e in events] == [connection.pk]
    page = user_client.get("/manychat/connections/")
    assert b"Sandbox Coffee Shop" in page.content and b"Active" in page.content
    assert connection.access_token.encode() not in page.content


def test_next_is_followed_when_local(sandbox, user_client):
    query = sandbox.consent(start_flow(user_client, next_url="/somewhere/?a=1"))
    assert callback(user_client, query)["Location"] == "/somewhere/?a=1"


@pytest.mark.parametrize(
    "hostile", ["//evil.example", "https://evil.example/x", "javascript:alert(1)", "\\\\evil.example"]
)
def test_next_to_another_site_is_ignored(sandbox, user_client, hostile):
    query = sandbox.consent(start_flow(user_client, next_url=hostile))
    assert callback(user_client, query)["Location"] == "/manychat/connections/"


def test_reconnecting_the_same_page_updates_the_row_in_place(sandbox, user, user_client):
    callback(user_client, sandbox.consent(start_flow(user_client)))
    first = ManychatConnection.objects.get(user=user)
    callback(user_client, sandbox.consent(start_flow(user_client)))
    second = ManychatConnection.objects.get(user=user)
    assert first.pk == second.pk
    assert first.access_token != second.access_token


def test_deny_shows_a_friendly_page_and_saves_nothing(sandbox, user_client):
    query = sandbox.consent(start_flow(user_client), decision="deny")
    assert query["error"] == "access_denied"
    response = callback(user_client, query)
    assert response.status_code == 200
    assert b"Connection cancelled" in response.content
    assert b'href="/manychat/connections/">Back to your connections</a>' in response.content
    assert not ManychatConnection.objects.exists()


def test_replayed_state_gives_400(sandbox, user_client):
    query = sandbox.consent(start_flow(user_client))
    assert callback(user_client, query).status_code == 302
    replay = callback(user_client, query)
    assert replay.status_code == 400
    assert b"Try again" in replay.content
    assert ManychatConnection.objects.count() == 1


def test_unknown_or_missing_state_gives_400(user_client):
    assert callback(user_client, {"code": "x"}).status_code == 400
    assert callback(user_client, {"state": "forged", "code": "x"}).status_code == 400


def test_expired_state_gives_400_and_saves_nothing(sandbox, user_client, settings):
    query = sandbox.consent(start_flow(user_client))
    session = user_client.session
    flows = session[SESSION_KEY]
    flows[query["state"]]["created"] = time.time() - 601
    session[SESSION_KEY] = flows
    session.save()
    response = callback(user_client, query)
    assert response.status_code == 400
    assert b"expired" in response.content
    assert not ManychatConnection.objects.exists()


def test_state_started_by_another_user_gives_400(sandbox, user_client, other_user):
    query = sandbox.consent(start_flow(user_client))
    # Bob logs in within the same browser session, then uses Alice's callback URL.
    session = user_client.session
    session["_auth_user_id"] = str(other_user.pk)
    session["_auth_user_hash"] = other_user.get_session_auth_hash()
    session.save()
    response = callback(user_client, query)
    assert response.status_code == 400
    assert not ManychatConnection.objects.exists()


def test_state_from_another_browser_session_gives_400(sandbox, user, user_client):
    query = sandbox.consent(start_flow(user_client))
    other_browser = Client()
    other_browser.force_login(user)
    assert callback(other_browser, query).status_code == 400


def test_tampered_code_gives_400_and_the_real_code_stays_unused(sandbox, user_client):
    query = sandbox.consent(start_flow(user_client))
    response = callback(user_client, {**query, "code": query["code"] + "x"})
    assert response.status_code == 400
    assert not ManychatConnection.objects.exists()
    assert SandboxAuthorizationCode.objects.get().used_at is None


def test_wrong_pkce_verifier_is_rejected_by_the_provider(sandbox, user_client):
    query = sandbox.consent(start_flow(user_client))
    session = user_client.session
    flows = session[SESSION_KEY]
    flows[query["state"]]["verifier"] = "a" * 64
    session[SESSION_KEY] = flows
    session.save()
    assert callback(user_client, query).status_code == 400
    assert not ManychatConnection.objects.exists()


def test_other_provider_error_gives_400(user_client):
    state = parse_qs(urlsplit(start_flow(user_client)).query)["state"][0]
    response = callback(user_client, {"state": state, "error": "server_error"})
    assert response.status_code == 400


def test_missing_code_gives_400(user_client):
    state = parse_qs(urlsplit(start_flow(user_client)).query)["state"][0]
    assert callback(user_client, {"state": state}).status_code == 400


@pytest.mark.parametrize(
    "fault",
    [
        {"status": 500, "body": "<html>oops</html>", "content_type": "text/html"},
        {"status": 503, "body": "", "retry_after": "30"},
        {"status": 200, "body": "this is not json", "content_type": "text/plain"},
        {"status": 200, "body": '{"token_type": "Bearer"}'},
        {"latency_ms": 1500, "status": 504},
    ],
    ids=["500", "503", "not-json", "no-access-token", "timeout"],
)
def test_provider_failure_during_exchange_gives_502_and_keeps_stored_data(sandbox, user, user_client, settings, fault):
    existing = ManychatConnection.objects.create(
        user=user, page_id="1000001", page_name="Kept", access_token="kept-at", refresh_token="kept-rt"
    )
    settings.MANYCHAT_OAUTH_HTTP_TIMEOUT = 0.5
    query = sandbox.consent(start_flow(user_client))
    sandbox.fault("token", times=1, **fault)
    response = callback(user_client, query)
    assert response.status_code == 502
    assert b"Try again" in response.content
    existing.refresh_from_db()
    assert (existing.access_token, existing.refresh_token, existing.page_name) == ("kept-at", "kept-rt", "Kept")
    assert ManychatConnection.objects.count() == 1


def test_get_info_failure_still_saves_the_connection(sandbox, user, user_client):
    query = sandbox.consent(start_flow(user_client))
    sandbox.fault("getinfo", status=500, times=1)
    assert callback(user_client, query).status_code == 302
    connection = ManychatConnection.objects.get(user=user)
    assert connection.page_id == "" and connection.access_token


def test_client_secret_basic_works_against_the_sandbox(sandbox, user, user_client, settings):
    settings.MANYCHAT_OAUTH_TOKEN_AUTH_METHOD = "client_secret_basic"
    assert callback(user_client, sandbox.consent(start_flow(user_client))).status_code == 302
    assert ManychatConnection.objects.filter(user=user).exists()


def test_wrong_client_secret_gives_503_without_blaming_the_user(sandbox, user_client, settings):
    query = sandbox.consent(start_flow(user_client))
    settings.MANYCHAT_SANDBOX_CLIENT_SECRET = "something-else"
    response = callback(user_client, query)
    assert response.status_code == 503
    assert b"not with your account" in response.content


def test_connect_without_oauth_configuration_explains_itself(user_client, settings):
    settings.MANYCHAT_OAUTH_CLIENT_ID = ""
    assert b"not set up" in user_client.get("/manychat/connect/").content
    response = user_client.post("/manychat/connect/")
    assert response.status_code == 503


def test_pending_flows_per_session_are_bounded(user_client):
    for _ in range(12):
        start_flow(user_client)
    assert len(user_client.session[SESSION_KEY]) <= 5


def test_disconnect_forgets_tokens_and_sends_signal(user, user_client):
    connection = ManychatConnection.objects.create(user=user, page_id="1", access_token="a", refresh_token="r")
    events = []
    connection_disconnected.connect(lambda **kw: events.append(kw), weak=False, dispatch_uid="t-disc")
    try:
        response = user_client.post(f"/manychat/connections/{connection.pk}/disconnect/")
    finally:
        connection_disconnected.disconnect(dispatch_uid="t-disc")
    assert response.status_code == 302
    connection.refresh_from_db()
    assert connection.status == "disconnected"
    assert connection.access_token is None and connection.refresh_token is None
    assert len(events) == 1


def test_disconnect_of_another_users_connection_is_404(user_client, other_user):
    theirs = ManychatConnection.objects.create(user=other_user, page_id="1", access_token="a")
    assert user_client.post(f"/manychat/connections/{theirs.pk}/disconnect/").status_code == 404
    theirs.refresh_from_db()
    assert theirs.status == "active"


def test_disconnect_needs_post_and_csrf(user, user_client):
    connection = ManychatConnection.objects.create(user=user, page_id="1", access_token="a")
    assert user_client.get(f"/manychat/connections/{connection.pk}/disconnect/").status_code == 405
    strict = Client(enforce_csrf_checks=True)
    strict.force_login(user)
    assert strict.post(f"/manychat/connections/{connection.pk}/disconnect/").status_code == 403
    assert strict.post("/manychat/connect/").status_code == 403


def test_sandbox_issues_pages_and_tokens_in_its_own_tables(sandbox, user_client):
    callback(user_client, sandbox.consent(start_flow(user_client)))
    assert SandboxPage.objects.count() == 1
    assert SandboxToken.objects.count() == 1
