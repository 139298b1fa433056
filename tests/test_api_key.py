"""Connecting with a Manychat page API key, over real HTTP to the sandbox (live_server)."""

from __future__ import annotations

import datetime as dt
import io
import json
import logging
import time
from types import SimpleNamespace

import pytest
from django.core.cache import cache
from django.core.management import CommandError, call_command
from django.test import RequestFactory
from django.utils import timezone

from manychat_oauth import health, views
from manychat_oauth.models import ManychatConnection
from manychat_oauth.sandbox.models import SandboxApiKey, SandboxFault, SandboxPage
from manychat_oauth.signals import connection_connected, reauth_required

from .conftest import captured

URL = "/manychat/api-key/"
PAGE_ID = "2000002"


@pytest.fixture(autouse=True)
def _fresh_rate_limit():
    cache.clear()
    yield
    cache.clear()


@pytest.fixture
def clock(monkeypatch) -> list[float]:
    """The views' clock, fixed (so a rate-limit window cannot turn over mid-test); move it with ``clock[0] += s``."""
    now = [1_000_000.0]
    monkeypatch.setattr(views, "time", SimpleNamespace(time=lambda: now[0]))
    return now


def sandbox_command(*args: str) -> str:
    out = io.StringIO()
    call_command("manychat_sandbox", *args, stdout=out)
    return out.getvalue().strip()


def new_page(name: str = "Bakery Bot", page_id: str = PAGE_ID) -> SandboxPage:
    sandbox_command("create-page", "--name", name, "--page-id", page_id)
    return SandboxPage.objects.get(page_id=page_id)


def new_key(page_id: str = PAGE_ID) -> str:
    return sandbox_command("create-api-key", "--page-id", page_id)


def getinfo_counter(sandbox) -> SandboxFault:
    """A fault that changes nothing but counts the requests reaching getInfo."""
    return sandbox.fault("getinfo", times=1000)


def requests_seen(counter: SandboxFault) -> int:
    counter.refresh_from_db()
    return 1000 - counter.remaining


# -- The form ---------------------------------------------------------------


def test_api_key_page_requires_login(client, db):
    response = client.get(URL)
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/")


def test_api_key_page_has_a_password_field(user_client):
    response = user_client.get(URL)
    assert response.status_code == 200
    assert b'type="password"' in response.content
    assert b'name="api_key"' in response.content


def test_api_key_view_marks_the_key_as_sensitive(user):
    request = RequestFactory().get(URL)
    request.user = user
    views.connect_api_key(request)
    assert request.sensitive_post_parameters == ("api_key",)


def test_connect_by_key_creates_an_active_api_key_connection_with_page_details(sandbox, user, user_client):
    page = new_page()
    page.username, page.category, page.timezone, page.is_pro = "bakery", "Bakery", "Europe/Paris", True
    page.avatar_link = "https://example.com/avatar.png"
    page.save()
    key = new_key()
    with captured(connection_connected) as events:
        response = user_client.post(URL, {"api_key": f"  {key} "})
    assert response.status_code == 302
    assert response["Location"] == "/manychat/connections/"
    connection = ManychatConnection.objects.get(user=user)
    assert connection.auth_type == "api_key"
    assert connection.status == "active"
    assert connection.access_token == key
    assert connection.refresh_token is None
    assert connection.expires_at is None
    assert (connection.page_id, connection.page_name) == (PAGE_ID, "Bakery Bot")
    assert (connection.page_username, connection.page_category) == ("bakery", "Bakery")
    assert (connection.page_timezone, connection.page_is_pro) == ("Europe/Paris", True)
    assert connection.page_avatar_url == "https://example.com/avatar.png"
    assert connection.last_checked_at is not None
    assert connection.get_access_token() == key
    assert [e["connection"].pk for e in events] == [connection.pk]
    assert events[0]["created"] is True
    page_html = user_client.get("/manychat/connections/")
    assert b"Bakery Bot" in page_html.content
    assert key.encode() not in page_html.content


@pytest.mark.parametrize(
    "bad",
    ["not-a-key", "2000002", "2000002:", ":abcdef", "abc:def", "2000002:abc-def", "2000002:abc def", "2000002:abc:def"],
)
def test_wrong_shape_key_is_refused_without_asking_manychat(sandbox, user_client, bad):
    counter = getinfo_counter(sandbox)
    response = user_client.post(URL, {"api_key": bad})
    assert response.status_code == 400
    assert b"This is not a Manychat page API key" in response.content
    assert requests_seen(counter) == 0
    assert not ManychatConnection.objects.exists()


def test_empty_key_asks_for_one(user_client):
    response = user_client.post(URL, {"api_key": "   "})
    assert response.status_code == 400
    assert b"Paste your page API key." in response.content


def test_rejected_key_gives_a_form_error_that_does_not_echo_it(sandbox, user_client):
    new_page()
    key = f"{PAGE_ID}:{'x' * 32}"
    counter = getinfo_counter(sandbox)
    response = user_client.post(URL, {"api_key": key})
    assert response.status_code == 400
    assert b"Manychat did not accept this API key" in response.content
    assert key.encode() not in response.content
    assert b"x" * 32 not in response.content
    assert requests_seen(counter) == 1
    assert not ManychatConnection.objects.exists()


def test_revoked_key_is_refused_like_a_wrong_one(sandbox, user_client):
    new_page()
    key = new_key()
    assert sandbox_command("revoke-api-key", "--page-id", PAGE_ID) == f"Revoked 1 API key(s) of page {PAGE_ID}."
    response = user_client.post(URL, {"api_key": key})
    assert response.status_code == 400
    assert b"Manychat did not accept this API key" in response.content
    assert not ManychatConnection.objects.exists()


def test_status_error_on_http_200_is_a_refusal_with_manychats_message(sandbox, user_client):
    new_page()
    key = new_key()
    sandbox.fault("getinfo", status=200, body={"status": "error", "message": "Page is not PRO", "details": []})
    response = user_client.post(URL, {"api_key": key})
    assert response.status_code == 400
    assert b"Manychat did not accept this API key: Page is not PRO" in response.content
    assert key.encode() not in response.content
    assert not ManychatConnection.objects.exists()


def test_manychats_message_is_not_shown_when_it_repeats_the_key(sandbox, user_client):
    new_page()
    key = new_key()
    sandbox.fault("getinfo", status=400, body={"status": "error", "message": f"bad key {key}"})
    response = user_client.post(URL, {"api_key": key})
    assert response.status_code == 400
    assert b"Manychat did not accept this API key." in response.content
    assert key.split(":")[1].encode() not in response.content


def test_answer_without_an_envelope_is_not_saved(sandbox, user_client):
    new_page()
    key = new_key()
    sandbox.fault("getinfo", status=200, body="<html>maintenance</html>", content_type="text/html")
    response = user_client.post(URL, {"api_key": key})
    assert response.status_code == 400
    assert b"could not be understood" in response.content
    assert not ManychatConnection.objects.exists()


@pytest.mark.parametrize("fault", ["http_500", "timeout", "exception_envelope"])
def test_manychat_down_says_try_again_later_and_saves_nothing(sandbox, settings, user_client, fault):
    new_page()
    key = new_key()
    if fault == "http_500":
        sandbox.fault("getinfo", status=500, body="oops", content_type="text/plain")
    elif fault == "timeout":
        settings.MANYCHAT_OAUTH_HTTP_TIMEOUT = 0.3
        sandbox.fault("getinfo", status=503, body="late", content_type="text/plain", latency_ms=1000, times=1)
    else:
        sandbox.fault("getinfo", status=500, body={"status": "exception", "message": "Something went wrong"})
    response = user_client.post(URL, {"api_key": key})
    assert response.status_code == 503
    assert b"We could not reach Manychat, try again later." in response.content
    assert key.encode() not in response.content
    assert not ManychatConnection.objects.exists()
    if fault == "timeout":
        time.sleep(1)  # let the sandbox finish the abandoned request while the test database exists


def test_manychat_unreachable_says_try_again_later(settings, user_client):
    settings.MANYCHAT_OAUTH_API_BASE_URL = "http://127.0.0.1:9"  # discard port: nothing listens
    response = user_client.post(URL, {"api_key": f"{PAGE_ID}:{'a' * 32}"})
    assert response.status_code == 503
    assert b"We could not reach Manychat, try again later." in response.content
    assert not ManychatConnection.objects.exists()


def test_reconnecting_the_same_page_updates_the_connection_in_place(sandbox, user, user_client):
    page = new_page()
    first = new_key()
    assert user_client.post(URL, {"api_key": first}).status_code == 302
    connection = ManychatConnection.objects.get(user=user)
    ManychatConnection.objects.filter(pk=connection.pk).update(
        status=ManychatConnection.Status.REAUTH_REQUIRED, last_error="unauthorized: refused"
    )
    sandbox_command("revoke-api-key", "--page-id", PAGE_ID)
    page.name = "Bakery Bot (renamed)"
    page.save()
    second = new_key()
    assert user_client.post(URL, {"api_key": second}).status_code == 302
    assert ManychatConnection.objects.filter(user=user).count() == 1
    connection.refresh_from_db()
    assert connection.access_token == second
    assert connection.status == "active"
    assert connection.last_error == ""
    assert connection.page_name == "Bakery Bot (renamed)"


def test_oauth_connection_to_the_same_page_becomes_an_api_key_connection(sandbox, user, user_client):
    new_page()
    existing = ManychatConnection.objects.create(
        user=user, auth_type="oauth", page_id=PAGE_ID, access_token="old-token", refresh_token="old-refresh"
    )
    key = new_key()
    assert user_client.post(URL, {"api_key": key}).status_code == 302
    existing.refresh_from_db()
    assert (existing.auth_type, existing.access_token, existing.refresh_token) == ("api_key", key, None)


def test_success_goes_to_a_local_next_url_only(sandbox, user_client):
    new_page()
    response = user_client.post(URL, {"api_key": new_key(), "next": "https://evil.example/"})
    assert response["Location"] == "/manychat/connections/"
    response = user_client.post(URL, {"api_key": new_key(), "next": "/dashboard/"})
    assert response["Location"] == "/dashboard/"


def test_api_key_attempts_are_rate_limited_per_user(sandbox, user_client, other_user, client, clock):
    new_page()
    key = new_key()
    for _ in range(views.API_KEY_ATTEMPTS):
        assert user_client.post(URL, {"api_key": "wrong"}).status_code == 400
    counter = getinfo_counter(sandbox)
    response = user_client.post(URL, {"api_key": key})
    assert response.status_code == 429
    assert b"Too many attempts" in response.content
    assert key.encode() not in response.content
    assert requests_seen(counter) == 0
    assert not ManychatConnection.objects.exists()
    # Another user is not limited by this one's attempts.
    client.force_login(other_user)
    assert client.post(URL, {"api_key": key}).status_code == 302


def test_rate_limit_window_starts_again_after_a_minute(sandbox, user_client, clock):
    new_page()
    for _ in range(views.API_KEY_ATTEMPTS):
        user_client.post(URL, {"api_key": "wrong"})
    assert user_client.post(URL, {"api_key": "wrong"}).status_code == 429
    clock[0] += views.API_KEY_WINDOW_SECONDS
    assert user_client.post(URL, {"api_key": new_key()}).status_code == 302


def test_no_key_in_pages_or_logs(sandbox, user_client, caplog):
    caplog.set_level(logging.DEBUG)
    new_page()
    good = new_key()
    wrong = f"{PAGE_ID}:{'Z' * 32}"
    pages = [
        user_client.post(URL, {"api_key": wrong}),
        user_client.post(URL, {"api_key": good}, follow=True),
        user_client.get("/manychat/connections/"),
        user_client.get(URL),
    ]
    for key in (good, wrong):
        secret = key.split(":")[1]
        for page in pages:
            assert secret.encode() not in page.content
        assert secret not in caplog.text
    assert "Connected to Bakery Bot" in pages[1].content.decode()


# -- Health checks in manychat_refresh_tokens -------------------------------


def connect(user_client, key: str) -> ManychatConnection:
    assert user_client.post(URL, {"api_key": key}).status_code == 302
    return ManychatConnection.objects.get(page_id=key.split(":")[0])


def age(connection: ManychatConnection, seconds: float) -> None:
    ManychatConnection.objects.filter(pk=connection.pk).update(
        last_checked_at=timezone.now() - dt.timedelta(seconds=seconds)
    )


def refresh_command(*args: str) -> tuple[int, dict]:
    out = io.StringIO()
    try:
        call_command("manychat_refresh_tokens", "--json", *args, stdout=out)
        code = 0
    except SystemExit as exc:
        code = int(exc.code)
    return code, json.loads(out.getvalue())


def test_health_check_notices_a_revoked_key(sandbox, user_client):
    new_page()
    connection = connect(user_client, new_key())
    age(connection, 86400 + 60)
    sandbox_command("revoke-api-key", "--page-id", PAGE_ID)
    with captured(reauth_required) as events:
        code, result = refresh_command()
    assert code == 1
    assert result["exit_code"] == 1
    assert result["health_checks"]["checked"] == 1
    assert result["health_checks"]["key_rejected"] == 1
    connection.refresh_from_db()
    assert connection.status == "reauth_required"
    assert "refused the key" in connection.last_error
    assert [e["connection"].pk for e in events] == [connection.pk]
    page = user_client.get("/manychat/connections/")
    assert b"Needs re-authorization" in page.content
    assert b"with a new" in page.content


def test_health_check_runs_at_most_once_per_interval(sandbox, settings, user_client):
    settings.MANYCHAT_OAUTH_API_KEY_CHECK_INTERVAL = 3600
    new_page()
    connection = connect(user_client, new_key())
    age(connection, 3000)
    counter = getinfo_counter(sandbox)
    code, result = refresh_command()
    assert (code, result["health_checks"]["checked"]) == (0, 0)
    assert requests_seen(counter) == 0
    age(connection, 3700)
    code, result = refresh_command()
    assert (code, result["health_checks"]["checked"], result["health_checks"]["key_rejected"]) == (0, 1, 0)
    assert requests_seen(counter) == 1
    code, result = refresh_command()
    assert result["health_checks"]["checked"] == 0
    assert requests_seen(counter) == 1


def test_health_check_updates_a_renamed_page(sandbox, user_client):
    page = new_page()
    connection = connect(user_client, new_key())
    age(connection, 2 * 86400)
    page.name = "Bakery Bot Deluxe"
    page.save()
    out = io.StringIO()
    call_command("manychat_refresh_tokens", stdout=out)
    assert "checked=1 key_rejected=0 check_failed=0" in out.getvalue()
    connection.refresh_from_db()
    assert connection.page_name == "Bakery Bot Deluxe"
    assert connection.status == "active"
    assert connection.last_checked_at > timezone.now() - dt.timedelta(minutes=1)


def test_health_check_failure_keeps_the_key_active(sandbox, user_client):
    new_page()
    connection = connect(user_client, new_key())
    age(connection, 2 * 86400)
    sandbox.fault("getinfo", status=503, body="down", content_type="text/plain")
    code, result = refresh_command()
    assert code == 1
    assert result["health_checks"]["check_failed"] == 1
    connection.refresh_from_db()
    assert connection.status == "active"
    assert connection.last_error.startswith("http_503")


def test_all_checks_every_key_connection_now(sandbox, user_client):
    new_page()
    connect(user_client, new_key())
    code, result = refresh_command("--all")
    assert (code, result["health_checks"]["checked"]) == (0, 1)


def test_connection_option_checks_only_those_key_connections(sandbox, user, user_client):
    new_page()
    new_page("Other page", "3000003")
    first = connect(user_client, new_key())
    connect(user_client, new_key("3000003"))
    code, result = refresh_command("--connection", str(first.pk))
    assert (code, result["health_checks"]["checked"]) == (0, 1)


# -- The sandbox command ----------------------------------------------------


def test_sandbox_command_creates_keys_shaped_like_manychats(db):
    new_page()
    key = new_key()
    page_id, secret = key.split(":")
    assert page_id == PAGE_ID
    assert len(secret) == 32 and secret.isalnum() and secret.isascii()
    assert SandboxApiKey.objects.get(key=key).revoked_at is None


def test_sandbox_command_picks_a_numeric_page_id(db):
    out = sandbox_command("create-page", "--name", "Auto id")
    page = SandboxPage.objects.get(name="Auto id")
    assert page.page_id.isdigit()
    assert page.page_id in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["create-api-key", "--page-id", "404"], "No sandbox page has id 404"),
        (["revoke-api-key", "--page-id", "404"], "No sandbox page has id 404"),
        (["create-page", "--name", "X", "--page-id", "12ab"], "is not a number"),
        (["create-page", "--name", "   "], "A page needs a name."),
    ],
)
def test_sandbox_command_explains_bad_input(db, args, message):
    with pytest.raises(CommandError, match=message):
        sandbox_command(*args)


def test_sandbox_command_refuses_a_duplicate_page_id(db):
    new_page()
    with pytest.raises(CommandError, match="already exists"):
        new_page()


def test_health_check_records_a_status_error_without_marking_reauth(sandbox, user_client):
    new_page()
    connection = connect(user_client, new_key())
    age(connection, 2 * 86400)
    sandbox.fault("getinfo", status=200, body={"status": "error", "message": "Temporarily blocked"})
    code, result = refresh_command()
    assert (code, result["health_checks"]["check_failed"], result["health_checks"]["key_rejected"]) == (1, 1, 0)
    connection.refresh_from_db()
    assert connection.status == "active"
    assert connection.last_error == "api_error: check failed"


def test_a_connection_claimed_by_another_run_is_not_checked_twice(sandbox, user_client):
    new_page()
    new_page("Other page", "3000003")
    first = connect(user_client, new_key())
    second = connect(user_client, new_key("3000003"))
    age(first, 2 * 86400)
    age(second, 2 * 86400)
    claimed = health._iter_claimed(health.check_candidates(now=timezone.now()))
    assert next(claimed).pk == first.pk
    # Another host claims the second connection meanwhile.
    ManychatConnection.objects.filter(pk=second.pk).update(last_checked_at=timezone.now())
    assert list(claimed) == []


def test_rate_limit_survives_a_counter_evicted_from_the_cache(user, monkeypatch, clock):
    # The counter may expire between add() and incr(): that attempt counts as the first.
    with monkeypatch.context() as patch:
        patch.setattr(views.cache, "add", lambda *args, **kwargs: False)
        assert views.api_key_attempt_allowed(user) is True
    for _ in range(views.API_KEY_ATTEMPTS - 1):
        assert views.api_key_attempt_allowed(user) is True
    assert views.api_key_attempt_allowed(user) is False


# -- The sandbox admin --------------------------------------------------------


def test_sandbox_admin_creates_and_revokes_api_keys(admin_client):
    page = new_page()
    response = admin_client.post(
        "/admin/manychat_sandbox/sandboxpage/",
        {"action": "create_api_keys", "_selected_action": [page.pk]},
        follow=True,
    )
    key = SandboxApiKey.objects.get(page=page)
    assert f"API key for Bakery Bot: {key.key}" in response.content.decode()
    response = admin_client.post(
        "/admin/manychat_sandbox/sandboxapikey/",
        {"action": "revoke", "_selected_action": [key.pk]},
        follow=True,
    )
    assert "Revoked 1 API key(s)." in response.content.decode()
    key.refresh_from_db()
    assert key.revoked_at is not None
    assert admin_client.get("/admin/manychat_sandbox/sandboxapikey/add/").status_code == 403
