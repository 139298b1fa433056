"""Manychat App Store installs over real HTTP: the sandbox plays Manychat and calls the live site."""

from __future__ import annotations

import datetime as dt
import json
import logging
import re

import pytest
import requests
from django.core.management import call_command
from django.core.management.base import CommandError
from django.utils import timezone

from manychat_oauth import api, checks, health
from manychat_oauth.app_install import hash_link_code, normalize_link_code
from manychat_oauth.exceptions import ProviderUnavailable
from manychat_oauth.models import ManychatConnection, ManychatLinkCode
from manychat_oauth.sandbox.app_store import create_install, install_app, send_install_request, uninstall_app
from manychat_oauth.sandbox.models import SandboxPage
from manychat_oauth.signals import connection_connected, reauth_required

SECRET = "install-secret-4b1d9e07c2"
EXCEPTION_BODY = {"status": "exception", "message": "Something went wrong"}

#: A URLconf without the app's URLs (used by the W005 test via ROOT_URLCONF).
urlpatterns: list[object] = []


@pytest.fixture
def app(sandbox, settings):
    """The sandbox plus a configured install endpoint; returns the endpoint's URL."""
    settings.MANYCHAT_OAUTH_APP_INSTALL_SECRET = SECRET
    settings.MANYCHAT_OAUTH_APP_INSTALL_URL = "https://manychat.com/apps/install/example"
    return f"{sandbox.server_url}/manychat/app/install/"


@pytest.fixture
def page(sandbox):
    return SandboxPage.objects.create(page_id="2000002", name="Sandbox Bakery", username="sandbox_bakery")


def shown_link_code(client) -> str:
    """The link code the connections page shows to the logged-in user."""
    response = client.get("/manychat/connections/")
    assert response.status_code == 200
    match = re.search(rb'id="mc-link-code"[^>]*>([A-Z0-9-]+)<', response.content)
    assert match, "no link code on the connections page"
    return match.group(1).decode()


def post_raw(url: str, body: bytes | str, **headers: str) -> requests.Response:
    return requests.post(url, data=body, headers={"Content-Type": "application/json", **headers}, timeout=10)


def install_headers(**extra: str) -> dict[str, str]:
    return {"X-Install-Secret": SECRET, **extra}


# -- Installing ---------------------------------------------------------------


def test_install_with_key_in_payload_connects_the_page_to_the_code_owner(app, page, user, user_client):
    events = []
    connection_connected.connect(lambda **kw: events.append(kw), weak=False, dispatch_uid="t-app-connected")
    try:
        call = install_app(page, url=app, secret=SECRET, link_code=shown_link_code(user_client), app_version="3")
    finally:
        connection_connected.disconnect(dispatch_uid="t-app-connected")
    assert call.status_code == 200, call.body
    assert call.body["status"] == "success"
    connection = ManychatConnection.objects.get(user=user)
    assert connection.auth_type == "app"
    assert connection.status == "active"
    assert connection.access_token == call.install.key
    assert (connection.page_id, connection.page_name) == ("2000002", "Sandbox Bakery")
    assert (connection.app_id, connection.app_version) == ("sandbox-app", "3")
    assert [e["connection"].pk for e in events] == [connection.pk]
    # API calls work with the stored App Key.
    assert api.get_page_info(connection.get_access_token())["name"] == "Sandbox Bakery"
    listing = user_client.get("/manychat/connections/")
    assert b"Sandbox Bakery" in listing.content and b"App install" in listing.content
    assert call.install.key.encode() not in listing.content


def test_install_with_key_in_header_connects_the_page(app, page, user, user_client):
    call = install_app(page, url=app, secret=SECRET, link_code=shown_link_code(user_client), token_in="header")
    assert call.status_code == 200, call.body
    assert ManychatConnection.objects.get(user=user).access_token == call.install.key


def test_key_header_name_and_secret_header_name_are_configurable(app, page, user, user_client, settings):
    settings.MANYCHAT_OAUTH_APP_TOKEN_HEADER = "x-token-header"
    settings.MANYCHAT_OAUTH_APP_INSTALL_SECRET_HEADER = "X-My-Secret"
    code = shown_link_code(user_client)
    call = install_app(page, url=app, secret=SECRET, link_code=code, token_in="header")
    assert call.status_code == 200, call.body
    assert ManychatConnection.objects.get(user=user).access_token == call.install.key


def test_link_code_is_accepted_in_lower_case_and_without_the_dash(app, page, user, user_client):
    code = shown_link_code(user_client).replace("-", "").lower()
    assert install_app(page, url=app, secret=SECRET, link_code=code).status_code == 200


def test_wrong_or_missing_secret_is_refused_with_403_and_the_code_stays_usable(app, page, user, user_client):
    code = shown_link_code(user_client)
    wrong = install_app(page, url=app, secret="not-the-secret", link_code=code)
    assert wrong.status_code == 403
    assert wrong.body["status"] == "error"
    missing = post_raw(app, json.dumps({"app_token": "1:abc", "link_code": code}))
    assert missing.status_code == 403
    assert not ManychatConnection.objects.exists()
    assert install_app(page, url=app, secret=SECRET, link_code=code).status_code == 200


def test_endpoint_refuses_every_call_while_no_secret_is_set(app, page, user, user_client, settings):
    code = shown_link_code(user_client)
    settings.MANYCHAT_OAUTH_APP_INSTALL_SECRET = None
    call = install_app(page, url=app, secret="", link_code=code)
    assert call.status_code == 503
    assert call.body == {"status": "error", "message": "App installs are not set up on this site yet."}
    assert not ManychatConnection.objects.exists()


@pytest.mark.parametrize("code", ["ZZZZ-ZZZZ", "not a code", "ABCD-EFG0"])
def test_unknown_or_malformed_link_code_is_a_400_with_a_message_for_manychat(app, page, user, code):
    call = install_app(page, url=app, secret=SECRET, link_code=code)
    assert call.status_code == 400
    assert call.body["status"] == "error"
    assert "link code" in call.message
    assert not ManychatConnection.objects.exists()


def test_expired_link_code_is_refused(app, page, user, user_client):
    code = shown_link_code(user_client)
    ManychatLinkCode.objects.update(expires_at=timezone.now() - dt.timedelta(seconds=1))
    call = install_app(page, url=app, secret=SECRET, link_code=code)
    assert call.status_code == 400
    assert "expired" in call.message
    assert not ManychatConnection.objects.exists()


def test_used_link_code_is_refused_for_another_installation(app, page, user, user_client):
    code = shown_link_code(user_client)
    assert install_app(page, url=app, secret=SECRET, link_code=code).status_code == 200
    other_page = SandboxPage.objects.create(page_id="3000003", name="Other page")
    call = install_app(other_page, url=app, secret=SECRET, link_code=code)
    assert call.status_code == 400
    assert "already used" in call.message
    assert list(ManychatConnection.objects.values_list("page_id", flat=True)) == ["2000002"]


def test_replaying_the_same_install_request_answers_200_again_and_changes_nothing(app, page, user, user_client):
    code = shown_link_code(user_client)
    installation = create_install(page)
    first = send_install_request(installation, url=app, secret=SECRET, link_code=code)
    connection = ManychatConnection.objects.get(user=user)
    second = send_install_request(installation, url=app, secret=SECRET, link_code=code, token_in="both")
    assert (first.status_code, second.status_code) == (200, 200)
    assert ManychatConnection.objects.count() == 1
    again = ManychatConnection.objects.get()
    assert (again.pk, again.updated_at) == (connection.pk, connection.updated_at)


def test_reinstall_with_a_new_code_updates_the_connection_in_place(app, page, user, user_client):
    first = install_app(page, url=app, secret=SECRET, link_code=shown_link_code(user_client), app_version="1")
    connection = ManychatConnection.objects.get(user=user)
    uninstall_app(page)
    # The used code is no longer shown: the page offers a new one.
    second = install_app(page, url=app, secret=SECRET, link_code=shown_link_code(user_client), app_version="2")
    assert (first.status_code, second.status_code) == (200, 200)
    connection.refresh_from_db()
    assert ManychatConnection.objects.count() == 1
    assert connection.access_token == second.install.key != first.install.key
    assert (connection.app_version, connection.status) == ("2", "active")


def test_install_goes_to_the_user_whose_code_was_typed(app, page, user, other_user, user_client):
    from django.test import Client

    bob = Client()
    bob.force_login(other_user)
    alice_code, bob_code = shown_link_code(user_client), shown_link_code(bob)
    assert alice_code != bob_code
    assert install_app(page, url=app, secret=SECRET, link_code=bob_code).status_code == 200
    assert ManychatConnection.objects.get().user == other_user


def test_key_not_accepted_by_manychat_is_refused(app, page, user, user_client):
    code = shown_link_code(user_client)
    body = {"app_token": "1:not-a-real-key", "page_id": "2000002", "link_code": code}
    response = post_raw(app, json.dumps(body), **install_headers())
    assert response.status_code == 400
    assert "did not accept" in response.json()["message"]
    assert ManychatLinkCode.objects.get().used_at is None


def test_page_id_that_does_not_match_the_key_is_refused(app, page, user, user_client):
    installation = create_install(page)
    body = {"app_token": installation.key, "page_id": "999", "link_code": shown_link_code(user_client)}
    response = post_raw(app, json.dumps(body), **install_headers())
    assert response.status_code == 400
    assert "page_id" in response.json()["message"]


@pytest.mark.parametrize(
    ("body", "status", "words"),
    [
        (b"{not json", 400, "not valid JSON"),
        (b"\xff\xfe", 400, "not valid JSON"),
        (b"[1, 2]", 400, "JSON object"),
        (b"[" * 15000, 400, "not valid JSON"),
        (b'{"link_code": "ABCD-EFGH"}', 400, "No usable App Key"),
        (b'{"app_token": "{{app_token}}", "link_code": "ABCD-EFGH"}', 400, "template"),
        (b'{"app_token": "1:abc", "link_code": "[[link_code]]"}', 400, "template"),
        (b'{"app_token": "1:abc"}', 400, "No link code"),
        (b'{"app_token": ["1:abc"], "link_code": "ABCD-EFGH"}', 400, "must be a string"),
        (b'{"app_token": "1:abc", "page_id": "9' + b"9" * 100 + b'", "link_code": "ABCD-EFGH"}', 400, "too long"),
        (b"x" * (17 * 1024), 413, "too large"),
    ],
)
def test_bad_bodies_get_a_json_4xx(app, body, status, words):
    response = post_raw(app, body, **install_headers())
    assert response.status_code == status
    assert response.json()["status"] == "error"
    assert words in response.json()["message"]


def test_key_in_payload_and_header_must_agree(app, page, user, user_client):
    body = {"app_token": "1:abc", "link_code": shown_link_code(user_client)}
    response = post_raw(app, json.dumps(body), **install_headers(**{"X-App-Token": "1:xyz"}))
    assert response.status_code == 400
    assert "differ" in response.json()["message"]


def test_install_endpoint_only_answers_post(app):
    response = requests.get(app, headers=install_headers(), timeout=10)
    assert response.status_code == 405
    assert response.headers["Allow"] == "POST"


# -- Link codes on the connections page ---------------------------------------


def test_connections_page_shows_a_stable_link_code_and_the_install_link(app, user, user_client):
    first = user_client.get("/manychat/connections/")
    assert b"https://manychat.com/apps/install/example" in first.content
    code = shown_link_code(user_client)
    assert shown_link_code(user_client) == code
    assert re.fullmatch(r"[A-HJKMNP-Z2-9]{4}-[A-HJKMNP-Z2-9]{4}", code)
    stored = ManychatLinkCode.objects.get()
    # Only a keyed hash is stored, never the code.
    assert stored.code_hash == hash_link_code(normalize_link_code(code))
    assert code.replace("-", "") not in stored.code_hash and code not in repr(stored)
    assert abs((stored.expires_at - stored.created_at).total_seconds() - 1800) < 5


def test_link_code_close_to_expiry_is_replaced_by_a_new_one(app, user, user_client):
    code = shown_link_code(user_client)
    ManychatLinkCode.objects.update(expires_at=timezone.now() + dt.timedelta(minutes=5))
    assert shown_link_code(user_client) != code
    # The old code stays valid until it expires: the user may be typing it already.
    assert ManychatLinkCode.objects.filter(used_at__isnull=True).count() == 2


def test_connections_page_shows_no_link_code_while_installs_are_not_set_up(user_client, db):
    response = user_client.get("/manychat/connections/")
    assert b"mc-link-code" not in response.content
    assert not ManychatLinkCode.objects.exists()


# -- Manual capture -------------------------------------------------------------


def test_pasted_app_key_is_verified_and_stored_as_an_app_connection(sandbox, page, user, user_client):
    installation = create_install(page)
    assert user_client.get("/manychat/app/key/").status_code == 200
    response = user_client.post("/manychat/app/key/", {"app_key": installation.key})
    assert response.status_code == 302
    connection = ManychatConnection.objects.get(user=user)
    assert (connection.auth_type, connection.page_id, connection.access_token) == ("app", "2000002", installation.key)


def test_pasted_app_key_that_manychat_refuses_shows_the_form_again(sandbox, page, user, user_client):
    response = user_client.post("/manychat/app/key/", {"app_key": "2000002:wrong"})
    assert response.status_code == 400
    assert b"did not accept this App Key" in response.content
    assert b"2000002:wrong" not in response.content
    assert not ManychatConnection.objects.exists()


def test_pasted_key_of_an_uninstalled_app_is_refused(sandbox, page, user, user_client):
    installation = create_install(page)
    uninstall_app(page)
    response = user_client.post("/manychat/app/key/", {"app_key": installation.key})
    assert response.status_code == 400
    assert b"uninstalled" in response.content
    assert not ManychatConnection.objects.exists()


def test_manual_capture_requires_login(client, db):
    response = client.get("/manychat/app/key/")
    assert response.status_code == 302 and response["Location"].startswith("/accounts/login/")


# -- Uninstall detection ----------------------------------------------------------


@pytest.fixture
def installed(app, page, user, user_client) -> ManychatConnection:
    assert install_app(page, url=app, secret=SECRET, link_code=shown_link_code(user_client)).ok
    return ManychatConnection.objects.get(user=user)


def move_suspicion_back(connection: ManychatConnection, hours: float) -> None:
    ManychatConnection.objects.filter(pk=connection.pk).update(
        uninstall_suspected_at=timezone.now() - dt.timedelta(hours=hours)
    )
    connection.refresh_from_db()


def test_a_single_uninstalled_answer_is_not_a_false_alarm(installed, page):
    uninstall_app(page)
    result = health.check_connection(installed)
    installed.refresh_from_db()
    assert not result.ok and result.error_code == "api_exception"
    assert installed.status == "active"
    assert installed.uninstall_signals == 1 and installed.uninstall_suspected_at is not None
    assert "possible app uninstall" in installed.last_error


def test_repeated_signals_within_the_hour_do_not_mark_the_connection(installed, page):
    uninstall_app(page)
    for _ in range(3):
        health.check_connection(installed)
    move_suspicion_back(installed, 0.9)
    health.check_connection(installed)
    installed.refresh_from_db()
    assert installed.status == "active"
    assert installed.uninstall_signals == 4


def test_signals_spread_over_an_hour_mark_the_app_uninstalled(installed, page):
    events = []
    reauth_required.connect(lambda **kw: events.append(kw), weak=False, dispatch_uid="t-app-reauth")
    try:
        uninstall_app(page)
        health.check_connection(installed)
        move_suspicion_back(installed, 1.01)
        health.check_connection(installed)
    finally:
        reauth_required.disconnect(dispatch_uid="t-app-reauth")
    installed.refresh_from_db()
    assert installed.status == "reauth_required"
    assert installed.last_error.startswith("app uninstalled")
    assert [e["connection"].pk for e in events] == [installed.pk]


def test_one_signal_an_hour_ago_is_not_enough_without_a_second(installed, sandbox):
    sandbox.fault("getinfo", status=500, body=EXCEPTION_BODY, times=1)
    health.check_connection(installed)
    move_suspicion_back(installed, 5)
    installed.refresh_from_db()
    assert installed.status == "active" and installed.uninstall_signals == 1


def test_a_success_between_signals_clears_the_suspicion(installed, sandbox):
    # A Manychat outage answering like an uninstalled app, then recovering.
    sandbox.fault("getinfo", status=500, body=EXCEPTION_BODY, times=1)
    health.check_connection(installed)
    move_suspicion_back(installed, 2)
    assert health.check_connection(installed).ok
    installed.refresh_from_db()
    assert (installed.uninstall_signals, installed.uninstall_suspected_at) == (0, None)
    sandbox.fault("getinfo", status=500, body=EXCEPTION_BODY, times=1)
    health.check_connection(installed)
    installed.refresh_from_db()
    assert installed.status == "active" and installed.uninstall_signals == 1


def test_other_server_errors_are_not_uninstall_signals(installed, sandbox):
    sandbox.fault("getinfo", status=502, body="Bad gateway", content_type="text/plain", times=2)
    health.check_connection(installed)
    move_suspicion_back(installed, 2)
    health.check_connection(installed)
    installed.refresh_from_db()
    assert installed.status == "active" and installed.uninstall_signals == 0


def test_client_calls_count_uninstall_signals_like_the_health_check(installed, page):
    client = api.ManychatClient(installed)
    uninstall_app(page)
    with pytest.raises(ProviderUnavailable):
        client.get_page_info()
    installed.refresh_from_db()
    assert installed.status == "active" and installed.uninstall_signals == 1
    move_suspicion_back(installed, 1.5)
    with pytest.raises(ProviderUnavailable):
        api.ManychatClient(installed).get_page_info()
    installed.refresh_from_db()
    assert installed.status == "reauth_required"
    assert installed.last_error.startswith("app uninstalled")


def test_a_successful_client_call_clears_the_uninstall_suspicion(installed, sandbox):
    sandbox.fault("getinfo", status=500, body=EXCEPTION_BODY, times=1)
    with pytest.raises(ProviderUnavailable):
        api.ManychatClient(installed).get_page_info()
    installed.refresh_from_db()
    assert installed.uninstall_signals == 1
    assert api.ManychatClient(installed).get_page_info()["name"]
    installed.refresh_from_db()
    assert (installed.uninstall_signals, installed.uninstall_suspected_at) == (0, None)


# -- Secrets stay out of logs ---------------------------------------------------


def test_no_app_key_or_link_code_in_any_log_record(app, page, user, user_client, caplog):
    caplog.set_level(logging.DEBUG)
    code = shown_link_code(user_client)
    installation = create_install(page)
    assert send_install_request(installation, url=app, secret=SECRET, link_code=code, token_in="header").ok
    assert send_install_request(installation, url=app, secret=SECRET, link_code=code).ok  # replay
    assert not install_app(page, url=app, secret=SECRET, link_code=code).ok  # used code
    assert not install_app(page, url=app, secret="wrong", link_code=code).ok
    pasted = create_install(page)
    user_client.post("/manychat/app/key/", {"app_key": pasted.key})
    user_client.post("/manychat/app/key/", {"app_key": "2000002:refused-key"})
    uninstall_app(page)
    connection = ManychatConnection.objects.get(user=user)
    health.check_connection(connection)
    keys = [installation.key, pasted.key, "2000002:refused-key", code, code.replace("-", ""), SECRET]
    assert caplog.records, "expected log records to inspect"
    for record in caplog.records:
        text = record.getMessage() + repr(record.args) + repr(getattr(record, "request", ""))
        for secret in keys:
            assert secret not in text, f"{secret!r} leaked in {record.name}: {record.getMessage()!r}"


# -- Sandbox command and system check --------------------------------------------


def test_sandbox_command_installs_and_uninstalls_like_manychat(app, page, user, user_client, capsys):
    call_command(
        "manychat_sandbox_app",
        "install",
        "--page-id",
        "2000002",
        "--url",
        app,
        "--secret",
        SECRET,
        "--link-code",
        shown_link_code(user_client),
        "--token-in",
        "header",
    )
    assert "Installed app sandbox-app" in capsys.readouterr().out
    connection = ManychatConnection.objects.get(user=user)
    call_command("manychat_sandbox_app", "uninstall", "--page-id", "2000002")
    with pytest.raises(ProviderUnavailable) as raised:
        api.get_page_info(connection.access_token)
    assert raised.value.code == "api_exception"


def test_sandbox_command_reports_refusals_and_bad_input(app, page, user):
    with pytest.raises(CommandError, match="HTTP 403"):
        call_command("manychat_sandbox_app", "install", "--url", app, "--secret", "bad", "--link-code", "ABCD-EFGH")
    with pytest.raises(CommandError, match="No sandbox page"):
        call_command("manychat_sandbox_app", "uninstall", "--page-id", "404")
    call_command("manychat_sandbox_app", "uninstall", "--page-id", "2000002")  # the refused install
    with pytest.raises(CommandError, match="No installed app"):
        call_command("manychat_sandbox_app", "uninstall", "--page-id", "2000002")
    with pytest.raises(CommandError, match="Could not reach"):
        call_command(
            "manychat_sandbox_app", "install", "--url", "http://127.0.0.1:9/x/", "--secret", "s", "--link-code", "x"
        )


def test_w005_warns_when_the_endpoint_is_routed_without_a_secret(settings):
    settings.MANYCHAT_OAUTH_APP_INSTALL_SECRET = None
    found = checks.check_app_install()
    assert [m.id for m in found] == ["manychat_oauth.W005"]
    assert "MANYCHAT_OAUTH_APP_INSTALL_SECRET" in found[0].hint
    settings.MANYCHAT_OAUTH_APP_INSTALL_SECRET = SECRET
    assert checks.check_app_install() == []


def test_w005_is_silent_when_the_endpoint_is_not_routed(settings):
    settings.MANYCHAT_OAUTH_APP_INSTALL_SECRET = None
    settings.ROOT_URLCONF = __name__
    assert checks.check_app_install() == []


def test_identical_install_requests_racing_both_get_200_and_one_connection(app, page, user, user_client):
    from concurrent.futures import ThreadPoolExecutor

    code = shown_link_code(user_client)
    installation = create_install(page)
    with ThreadPoolExecutor(max_workers=4) as pool:
        calls = list(
            pool.map(lambda _: send_install_request(installation, url=app, secret=SECRET, link_code=code), range(4))
        )
    assert [c.status_code for c in calls] == [200] * 4
    assert ManychatConnection.objects.count() == 1


def test_manychat_unreachable_during_install_asks_to_retry_and_keeps_the_code(app, page, user, user_client, sandbox):
    code = shown_link_code(user_client)
    sandbox.fault("getinfo", status=503, body="", times=1)
    first = install_app(page, url=app, secret=SECRET, link_code=code)
    assert first.status_code == 502
    assert "retry" in first.message
    assert install_app(page, url=app, secret=SECRET, link_code=code).status_code == 200


def test_a_user_keeps_at_most_five_unused_link_codes(user, db):
    from manychat_oauth.app_install import MAX_LIVE_CODES_PER_USER, issue_link_code

    issued = [issue_link_code(user) for _ in range(8)]
    live = set(ManychatLinkCode.objects.filter(user=user).values_list("pk", flat=True))
    assert live == {code.pk for code in issued[-MAX_LIVE_CODES_PER_USER:]}
    assert all(code.code not in repr(code) for code in issued)


def test_pasted_app_key_with_spaces_is_refused_before_asking_manychat(sandbox, user, user_client):
    response = user_client.post("/manychat/app/key/", {"app_key": "2000002: abc"})
    assert response.status_code == 400
    assert b"no spaces" in response.content


@pytest.mark.parametrize("name", ["MANYCHAT_OAUTH_APP_LINK_CODE_MAX_AGE", "MANYCHAT_OAUTH_APP_UNINSTALL_AFTER"])
def test_invalid_app_install_durations_are_e005(settings, name):
    setattr(settings, name, "soon")
    found = [m for m in checks.check_settings() if m.id == "manychat_oauth.E005"]
    assert len(found) == 1 and name in found[0].msg
