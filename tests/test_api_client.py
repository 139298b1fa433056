"""ManychatClient over real HTTP to the sandbox (live_server)."""

from __future__ import annotations

import time

import pytest

from manychat_oauth import health, services
from manychat_oauth.api import ManychatClient
from manychat_oauth.exceptions import ManychatAPIError, ManychatAuthError, ProviderUnavailable
from manychat_oauth.models import ManychatConnection
from manychat_oauth.refresh import ConnectionNotActive
from manychat_oauth.sandbox.accounts import create_api_key, create_page, revoke_api_keys
from manychat_oauth.sandbox.models import SandboxFault, SandboxPage, SandboxToken
from manychat_oauth.signals import reauth_required, tokens_refreshed

from .conftest import captured, start_flow

WRONG_TOKEN = {"status": "error", "message": "Wrong token", "details": []}


def counter(sandbox, endpoint: str) -> SandboxFault:
    """A fault that changes nothing but counts the requests reaching ``endpoint``."""
    return sandbox.fault(endpoint, times=1000)


def seen(fault: SandboxFault) -> int:
    fault.refresh_from_db()
    return 1000 - fault.remaining


@pytest.fixture
def oauth_connection(sandbox, user, user_client) -> ManychatConnection:
    query = sandbox.consent(start_flow(user_client))
    assert user_client.get("/manychat/callback/", query).status_code == 302
    return ManychatConnection.objects.get(user=user, auth_type="oauth")


@pytest.fixture
def key_connection(sandbox, user) -> ManychatConnection:
    page = create_page("Key Page", page_id="4000004", username="keypage")
    connection, _ = services.save_connection(
        user, auth_type="api_key", access_token=create_api_key(page).key, page={"page_id": "4000004"}
    )
    return connection


def test_get_page_info_with_an_api_key_connection(key_connection):
    info = ManychatClient(key_connection).get_page_info()
    assert info["id"] == 4000004
    assert info["name"] == "Key Page"
    assert info["username"] == "keypage"


def test_request_returns_the_envelopes_data(key_connection):
    data = ManychatClient(key_connection).request("GET", "fb/page/getInfo", params={"unused": "1"})
    assert data["name"] == "Key Page"


def test_get_page_info_with_an_oauth_connection(oauth_connection):
    assert ManychatClient(oauth_connection).get_page_info()["name"] == "Sandbox Coffee Shop"


def test_client_refreshes_an_oauth_token_once_and_retries_after_a_401(sandbox, oauth_connection):
    old_token = oauth_connection.access_token
    sandbox.fault("getinfo", status=401, body=WRONG_TOKEN, times=1)
    token_calls = counter(sandbox, "token")
    with captured(tokens_refreshed) as refreshed:
        info = ManychatClient(oauth_connection).get_page_info()
    assert info["name"] == "Sandbox Coffee Shop"
    assert seen(token_calls) == 1
    assert len(refreshed) == 1
    oauth_connection.refresh_from_db()
    assert oauth_connection.access_token != old_token
    assert oauth_connection.status == "active"
    assert SandboxToken.objects.get(access_token=old_token).rotated_at is not None


def test_client_retries_only_once_when_the_new_token_is_refused_too(sandbox, oauth_connection):
    sandbox.fault("getinfo", status=401, body=WRONG_TOKEN, times=2)
    token_calls = counter(sandbox, "token")
    with pytest.raises(ManychatAuthError) as caught:
        ManychatClient(oauth_connection).get_page_info()
    assert caught.value.api_message == "Wrong token"
    assert seen(token_calls) == 1
    oauth_connection.refresh_from_db()
    assert oauth_connection.status == "active"
    assert ManychatClient(oauth_connection).get_page_info()["name"] == "Sandbox Coffee Shop"


def test_client_gives_up_when_the_refresh_token_is_refused(sandbox, oauth_connection):
    # Manychat revoked the whole grant: the token is refused and cannot be refreshed.
    SandboxToken.objects.update(revoked=True)
    with pytest.raises(ConnectionNotActive):
        ManychatClient(oauth_connection).get_page_info()
    oauth_connection.refresh_from_db()
    assert oauth_connection.status == "reauth_required"


def test_refused_api_key_marks_the_connection_reauth_required(sandbox, key_connection):
    revoke_api_keys(SandboxPage.objects.get(page_id="4000004"))
    token_calls = counter(sandbox, "token")
    with captured(reauth_required) as events, pytest.raises(ManychatAuthError):
        ManychatClient(key_connection).get_page_info()
    assert seen(token_calls) == 0
    key_connection.refresh_from_db()
    assert key_connection.status == "reauth_required"
    assert "refused the key" in key_connection.last_error
    assert [e["connection"].pk for e in events] == [key_connection.pk]
    with pytest.raises(ConnectionNotActive):
        ManychatClient(key_connection).get_page_info()


def test_status_error_on_http_200_raises_a_typed_error_with_manychats_message(sandbox, key_connection):
    key = key_connection.access_token
    sandbox.fault("getinfo", status=200, body={"status": "error", "message": "Permission denied", "details": []})
    with pytest.raises(ManychatAPIError) as caught:
        ManychatClient(key_connection).request("GET", "/fb/page/getInfo")
    assert not isinstance(caught.value, ManychatAuthError)
    assert caught.value.api_message == "Permission denied"
    assert caught.value.status_code == 200
    for text in (str(caught.value), repr(caught.value), repr(ManychatClient(key_connection))):
        assert key not in text and key.split(":")[1] not in text
    key_connection.refresh_from_db()
    assert key_connection.status == "active"


def test_every_call_has_the_configured_timeout(sandbox, settings, key_connection):
    settings.MANYCHAT_OAUTH_HTTP_TIMEOUT = 0.3
    sandbox.fault("getinfo", status=503, body="late", content_type="text/plain", latency_ms=1200, times=1)
    started = time.monotonic()
    with pytest.raises(ProviderUnavailable) as caught:
        ManychatClient(key_connection).get_page_info()
    assert time.monotonic() - started < 1.0
    assert caught.value.code == "read_timeout"
    assert key_connection.access_token not in str(caught.value)
    time.sleep(1.2)  # let the sandbox finish the abandoned request while the test database exists


def test_inactive_connection_raises_without_calling_manychat(sandbox, key_connection):
    getinfo_calls = counter(sandbox, "getinfo")
    ManychatConnection.objects.filter(pk=key_connection.pk).update(status="reauth_required")
    key_connection.refresh_from_db()
    with pytest.raises(ConnectionNotActive):
        ManychatClient(key_connection).get_page_info()
    assert seen(getinfo_calls) == 0


def test_client_raises_the_refusal_when_the_refresh_fails(sandbox, oauth_connection):
    old_token = oauth_connection.access_token
    sandbox.fault("getinfo", status=401, body=WRONG_TOKEN, times=1)
    sandbox.fault("token", status=503, body="busy", content_type="text/plain", times=1)
    with pytest.raises(ManychatAuthError):
        ManychatClient(oauth_connection).get_page_info()
    oauth_connection.refresh_from_db()
    assert oauth_connection.access_token == old_token
    assert oauth_connection.status == "active"
    assert oauth_connection.consecutive_failures == 1


def test_page_info_without_a_page_id_is_an_invalid_response(sandbox, key_connection):
    sandbox.fault("getinfo", status=200, body={"status": "success", "data": {"name": "no id"}})
    with pytest.raises(ManychatAPIError) as caught:
        ManychatClient(key_connection).get_page_info()
    assert caught.value.code == "invalid_response"


def test_check_of_a_refused_oauth_token_leaves_the_decision_to_the_refresh(sandbox, oauth_connection):
    sandbox.fault("getinfo", status=401, body=WRONG_TOKEN, times=1)
    result = health.check_connection(oauth_connection)
    assert (result.ok, result.status, result.error_code) == (False, "active", "unauthorized")
    oauth_connection.refresh_from_db()
    assert oauth_connection.status == "active"
    assert oauth_connection.last_error == "unauthorized: token refused"


def test_check_keeps_the_page_id_when_the_key_answers_for_another_page(sandbox, user):
    other = create_page("Moved Page", page_id="5000005")
    connection, _ = services.save_connection(
        user, auth_type="api_key", access_token=create_api_key(other).key, page={"page_id": "4000004"}
    )
    assert health.check_connection(connection).ok
    connection.refresh_from_db()
    assert (connection.page_id, connection.page_name) == ("4000004", "Moved Page")
