"""End to end in a real browser: Debian's Chromium, driven by Playwright, against live_server and the sandbox.

Each test leaves a screenshot of its final page in ``artifacts/browser/``.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from django.conf import settings
from django.db import connection as db_connection
from django.utils import timezone

from manychat_oauth.models import ManychatConnection
from manychat_oauth.sandbox.models import SandboxToken

from .due_connections import make_connections, stored_refresh_token_is_current

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")
LAUNCH_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(__file__).resolve().parent.parent / "artifacts" / "browser"
PAGE_NAME = "Sandbox Coffee Shop"
CHANGELIST = "/admin/manychat_oauth/manychatconnection/"


def skip_or_fail(reason: str) -> None:
    """Skip locally; under CI=true a missing browser is a failure."""
    if os.environ.get("CI") == "true":
        pytest.fail(reason)
    pytest.skip(reason)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not os.access(CHROMIUM, os.X_OK):
        skip_or_fail(f"{CHROMIUM} is missing: install Debian's chromium package (apt-get install chromium).")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        skip_or_fail("playwright is not installed: pip install -e '.[test]'.")
    # Playwright's sync API runs an event loop in this thread; the ORM calls the
    # tests and pytest-django make from it are still synchronous.
    saved = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    try:
        with sync_playwright() as playwright:
            chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=LAUNCH_ARGS)
            yield chromium
            chromium.close()
    finally:
        if saved is None:
            os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
        else:
            os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = saved


@pytest.fixture
def page(browser, sandbox, request) -> Iterator[Any]:
    context = browser.new_context(base_url=sandbox.server_url, viewport={"width": 1100, "height": 760})
    tab = context.new_page()
    tab.set_default_timeout(20_000)
    yield tab
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    tab.screenshot(path=str(ARTIFACTS / f"{request.node.name}.png"), full_page=True)
    context.close()


def log_in(page, username: str = "alice", password: str = "pw-alice") -> None:
    """Open the connections page, get sent to the login form, log in, come back."""
    page.goto("/manychat/connections/")
    assert "/accounts/login/?next=/manychat/connections/" in page.url
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(password)
    with page.expect_response(lambda r: r.url.endswith("/manychat/connections/")) as landed:
        page.get_by_role("button", name="Log in").click()
    assert landed.value.status == 200
    assert page.get_by_role("heading", name="Your Manychat connections").is_visible()


def go_to_consent(page) -> None:
    page.get_by_role("button", name="Connect with Manychat").click()
    page.wait_for_url("**/sandbox/manychat/oauth/authorize?**")
    assert page.get_by_role("heading", name="Authorize access").is_visible()
    assert page.get_by_label(PAGE_NAME).is_checked()


def approve(page) -> None:
    with page.expect_response(lambda r: r.url.endswith("/manychat/connections/")) as landed:
        page.get_by_role("button", name="Approve").click()
    assert landed.value.status == 200


def assert_no_secrets(html: str, *connections: ManychatConnection) -> None:
    for connection in connections:
        for secret in (connection.access_token, connection.refresh_token):
            if secret:
                assert secret not in html
    assert "sbx_at_" not in html and "sbx_rt_" not in html
    assert settings.MANYCHAT_OAUTH_CLIENT_SECRET not in html


def test_connect_and_approve_shows_the_connection_active_with_its_page_name(page, user):
    log_in(page)
    assert page.get_by_text("You have not connected a Manychat page yet.").is_visible()
    go_to_consent(page)
    approve(page)

    assert page.get_by_text(f"Connected to {PAGE_NAME}.").is_visible()
    row = page.locator("tbody tr", has_text=PAGE_NAME)
    assert row.count() == 1
    assert row.locator(".mc-status").inner_text() == "Active"
    assert "Page 1000001" in row.inner_text()
    connection = ManychatConnection.objects.get(user=user)
    assert (connection.status, connection.page_name) == ("active", PAGE_NAME)
    assert connection.access_token and connection.refresh_token
    assert_no_secrets(page.content(), connection)


def test_deny_shows_a_friendly_message_and_saves_no_connection(page, user):
    log_in(page)
    go_to_consent(page)
    with page.expect_response(lambda r: "/manychat/callback/" in r.url) as answered:
        page.get_by_role("button", name="Deny").click()

    assert answered.value.status == 200
    assert page.get_by_role("heading", name="Connection cancelled").is_visible()
    assert page.get_by_text("You chose not to connect your Manychat account. Nothing was changed.").is_visible()
    assert page.get_by_role("link", name="Try again").is_visible()
    back = page.get_by_role("link", name="Back to your connections")
    assert back.is_visible() and back.get_attribute("href") == "/manychat/connections/"
    assert "access_denied" not in page.inner_text("body")
    assert not ManychatConnection.objects.exists()
    assert_no_secrets(page.content())


def test_disconnect_removes_the_connection_and_forgets_its_tokens(page, user):
    log_in(page)
    go_to_consent(page)
    approve(page)
    connection = ManychatConnection.objects.get(user=user)

    with page.expect_response(lambda r: r.url.endswith("/manychat/connections/")) as landed:
        page.locator("tbody tr", has_text=PAGE_NAME).get_by_role("button", name="Disconnect").click()

    assert landed.value.status == 200
    assert page.get_by_text(f"Disconnected {PAGE_NAME}.").is_visible()
    assert page.get_by_text("You have not connected a Manychat page yet.").is_visible()
    assert page.locator("tbody tr").count() == 0
    assert_no_secrets(page.content(), connection)
    connection.refresh_from_db()
    assert connection.status == "disconnected"
    assert connection.access_token is None and connection.refresh_token is None


def stored_ciphertexts() -> list[str]:
    """The token columns exactly as stored (encrypted), read straight from the table."""
    with db_connection.cursor() as cursor:
        cursor.execute("SELECT access_token, refresh_token FROM manychat_oauth_manychatconnection")
        return [value for row in cursor.fetchall() for value in row if value]


def oauth_connection(user, page_name: str, **fields) -> ManychatConnection:
    """An OAuth connection with made-up (findable) tokens the sandbox never issued."""
    slug = page_name.lower().replace(" ", "-")
    return ManychatConnection.objects.create(
        user=user,
        page_id=str(3_000_000 + ManychatConnection.objects.count()),
        page_name=page_name,
        access_token=f"plain-access-{slug}",
        refresh_token=f"plain-refresh-{slug}",
        **fields,
    )


def admin_row(page, page_name: str):
    return page.locator("#result_list tbody tr", has_text=page_name)


def test_staff_sees_health_badges_filters_and_refreshes_a_due_connection_from_the_admin(page, user, django_user_model):
    from playwright.sync_api import expect

    django_user_model.objects.create_superuser("root", "root@example.com", "pw-root")
    now = timezone.now()
    [due_pk] = make_connections(user, 1)  # expired a minute ago, tokens issued by the sandbox
    due = ManychatConnection.objects.get(pk=due_pk)
    old_refresh, old_refreshed_at = due.refresh_token, due.last_refreshed_at
    reauth = oauth_connection(
        user,
        "Revoked Bakery",
        expires_at=now + dt.timedelta(minutes=30),
        status="reauth_required",
        last_error="invalid_grant: the user must connect again.",
    )
    failing = oauth_connection(
        user,
        "Flaky Florist",
        expires_at=now + dt.timedelta(minutes=40),
        consecutive_failures=2,
        next_attempt_at=now + dt.timedelta(minutes=4),
        last_error="http_503: the authorization server answered 503; retried later.",
    )
    healthy = ManychatConnection.objects.create(
        user=user, auth_type="api_key", page_id="3000003", page_name="Steady Stationer", access_token="plain-api-key"
    )
    everyone = [due, reauth, failing, healthy]
    ciphertexts = stored_ciphertexts()

    page.set_viewport_size({"width": 1440, "height": 900})  # the admin's sidebar and eight columns need room
    page.goto(f"/admin/login/?next={CHANGELIST}")
    page.get_by_label("Username").fill("root")
    page.get_by_label("Password").fill("pw-root")
    with page.expect_response(lambda r: urlsplit(r.url).path == CHANGELIST) as landed:
        page.get_by_role("button", name="Log in").click()
    assert landed.value.status == 200
    page.wait_for_url(lambda url: urlsplit(url).path == CHANGELIST)

    # One badge per health state, most urgent first; the summary counts every state.
    rows = page.locator("#result_list tbody tr")
    assert rows.count() == 4
    badges = [text.split(" ", 1)[1] for text in rows.locator(".manychat-health").all_inner_texts()]
    assert badges == ["Needs re-auth", "Expired", "Failing, backing off", "Healthy"]
    assert admin_row(page, "Revoked Bakery").locator(".manychat-health-reauth").is_visible()
    assert admin_row(page, due.page_name).locator(".manychat-health-expired").is_visible()
    assert admin_row(page, "Flaky Florist").locator(".manychat-health-backoff").is_visible()
    assert "http_503" in admin_row(page, "Flaky Florist").inner_text()
    assert admin_row(page, "Steady Stationer").locator(".manychat-health-healthy").is_visible()
    summary = page.get_by_role("navigation", name="Connections by health").locator("li")
    counts = {
        item.locator(".manychat-health").inner_text().split(" ", 1)[1]: item.locator(".count").inner_text()
        for item in summary.all()
    }
    assert counts == {
        "Needs re-auth": "1",
        "Expired": "1",
        "Failing, backing off": "1",
        "Expiring soon": "0",
        "Healthy": "1",
        "Disconnected": "0",
    }
    assert_no_secrets(page.content(), *everyone)

    # The health filter narrows the rows to that state.
    by_health = page.locator('#changelist-filter details[data-filter-title="health"]')
    assert by_health.locator("summary").inner_text().strip().endswith("By health")
    assert by_health.get_by_role("link").all_inner_texts() == ["All", *counts]
    by_health.get_by_role("link", name="Needs re-auth", exact=True).click()
    page.wait_for_url("**?health=reauth")
    assert rows.count() == 1
    assert rows.first.locator(".manychat-health").inner_text().endswith("Needs re-auth")
    assert "Revoked Bakery" in rows.first.inner_text()
    by_health.get_by_role("link", name="All", exact=True).click()
    page.wait_for_url(f"**{CHANGELIST}?")
    assert rows.count() == 4

    # "Refresh tokens now" on the due row goes over HTTP to the sandbox.
    admin_row(page, due.page_name).locator("input.action-select").check()
    page.locator("select[name=action]").select_option(label="Refresh tokens now")
    with page.expect_response(lambda r: urlsplit(r.url).path == CHANGELIST and r.request.method == "GET") as done:
        page.get_by_role("button", name="Go").click()
    assert done.value.status == 200
    expect(page.locator("ul.messagelist li")).to_have_text(["Refresh tokens now: 1 refreshed."])
    assert page.locator("ul.messagelist li.success").count() == 1
    page.wait_for_load_state("load")
    refreshed_row = admin_row(page, due.page_name)
    assert refreshed_row.locator(".manychat-health").inner_text().endswith("Healthy")
    assert refreshed_row.locator("td.field-last_refreshed").inner_text().endswith(" s ago")

    due.refresh_from_db()
    assert due.last_refreshed_at > old_refreshed_at and due.last_refreshed_at >= now
    assert due.expires_at > timezone.now() + dt.timedelta(minutes=30)
    assert due.refresh_token != old_refresh
    assert stored_refresh_token_is_current(due)
    assert SandboxToken.objects.get(refresh_token=old_refresh).rotated_at is not None
    failing.refresh_from_db()
    assert failing.consecutive_failures == 2  # not selected, not touched

    html = page.content()
    assert_no_secrets(html, *everyone, due)
    for ciphertext in [*ciphertexts, *stored_ciphertexts()]:
        assert ciphertext not in html
