"""End to end in a real browser: Debian's Chromium, driven by Playwright, against live_server and the sandbox.

Each test leaves a screenshot of its final page in ``artifacts/browser/``.
"""

from __future__ import annotations

import datetime as dt
import os
import re
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


def expect(target: Any) -> Any:
    """Playwright's auto-retrying assertions (imported late: without Playwright the tests skip)."""
    from playwright.sync_api import expect as playwright_expect

    return playwright_expect(target)


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
    expect(page.get_by_role("heading", name="Your Manychat connections")).to_be_visible()


def go_to_consent(page) -> None:
    page.get_by_role("button", name="Connect with Manychat").click()
    page.wait_for_url("**/sandbox/manychat/oauth/authorize?**")
    expect(page.get_by_role("heading", name="Authorize access")).to_be_visible()
    expect(page.get_by_label(PAGE_NAME)).to_be_checked()


def approve(page) -> None:
    with page.expect_response(lambda r: r.url.endswith("/manychat/connections/")) as landed:
        page.get_by_role("button", name="Approve").click()
    assert landed.value.status == 200
    expect(page.get_by_role("heading", name="Your Manychat connections")).to_be_visible()


def assert_no_secrets(html: str, *connections: ManychatConnection) -> None:
    for connection in connections:
        for secret in (connection.access_token, connection.refresh_token):
            if secret:
                assert secret not in html
    assert "sbx_at_" not in html and "sbx_rt_" not in html
    assert settings.MANYCHAT_OAUTH_CLIENT_SECRET not in html


def test_connect_and_approve_shows_the_connection_active_with_its_page_name(page, user):
    log_in(page)
    expect(page.get_by_text("You have not connected a Manychat page yet.")).to_be_visible()
    go_to_consent(page)
    approve(page)

    expect(page.get_by_text(f"Connected to {PAGE_NAME}.")).to_be_visible()
    row = page.locator("tbody tr", has_text=PAGE_NAME)
    expect(row).to_have_count(1)
    expect(row.locator(".mc-status")).to_have_text("Active")
    expect(row).to_contain_text("Page 1000001")
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
    expect(page.get_by_role("heading", name="Connection cancelled")).to_be_visible()
    expect(page.get_by_text("You chose not to connect your Manychat account. Nothing was changed.")).to_be_visible()
    expect(page.get_by_role("link", name="Try again")).to_be_visible()
    back = page.get_by_role("link", name="Back to your connections")
    expect(back).to_be_visible()
    expect(back).to_have_attribute("href", "/manychat/connections/")
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
    expect(page.get_by_text(f"Disconnected {PAGE_NAME}.")).to_be_visible()
    expect(page.get_by_text("You have not connected a Manychat page yet.")).to_be_visible()
    expect(page.locator("tbody tr")).to_have_count(0)
    assert_no_secrets(page.content(), connection)
    connection.refresh_from_db()
    assert connection.status == "disconnected"
    assert connection.access_token is None and connection.refresh_token is None


def submit_api_key(page, key: str, status: int) -> None:
    page.get_by_label("Page API key").fill(key)
    with page.expect_response(lambda r: r.request.method == "POST" and "/manychat/api-key/" in r.url) as answered:
        page.get_by_role("button", name="Verify and connect").click()
    assert answered.value.status == status


def test_connect_with_an_api_key_after_a_wrong_one_was_refused(page, user):
    from manychat_oauth.sandbox import accounts

    log_in(page)
    page.get_by_role("link", name="Connect with a page API key").click()
    page.wait_for_url("**/manychat/api-key/")
    expect(page.get_by_role("heading", name="Connect with a page API key")).to_be_visible()

    # A key of the right shape that Manychat (the sandbox) refuses: a clear error, nothing saved or echoed.
    wrong = "1000001:wrongwrongwrong"
    submit_api_key(page, wrong, 400)
    expect(page.locator(".errorlist")).to_have_text(
        "Manychat did not accept this API key. Check that you copied all of it and that it was not "
        "revoked in Manychat (Settings → API)."
    )
    expect(page.get_by_label("Page API key")).to_have_value("")
    html = page.content()
    assert wrong not in html and "wrongwrongwrong" not in html
    assert not ManychatConnection.objects.exists()

    # The page's real key: verified with getInfo, saved, and the connection shows on the connections page.
    sandbox_page = accounts.create_page("Harbour Bookshop", username="harbour_books")
    key = accounts.create_api_key(sandbox_page).key
    submit_api_key(page, key, 302)  # to the connections page
    page.wait_for_url("**/manychat/connections/")
    expect(page.get_by_text("Connected to Harbour Bookshop with its API key.")).to_be_visible()
    row = page.locator("tbody tr", has_text="Harbour Bookshop")
    expect(row).to_have_count(1)
    expect(row.locator("td").nth(0)).to_contain_text(f"Page {sandbox_page.page_id}")
    expect(row.locator("td").nth(1)).to_have_text("API key")
    expect(row.locator(".mc-status")).to_have_text("Active")

    connection = ManychatConnection.objects.get(user=user)
    assert (connection.auth_type, connection.status) == ("api_key", "active")
    assert (connection.page_id, connection.page_name) == (sandbox_page.page_id, "Harbour Bookshop")
    assert connection.access_token == key
    html = page.content()
    assert key not in html and key.split(":", 1)[1] not in html
    assert_no_secrets(html, connection)


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


def badge_labels(badges) -> list[str]:
    """The words of health badges, without the symbol (joined to them by a no-break space)."""
    return [text.split("\xa0", 1)[1] for text in badges.all_inner_texts()]


def test_staff_sees_health_badges_filters_and_refreshes_a_due_connection_from_the_admin(page, user, django_user_model):
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

    # The size of a laptop screen, with the admin's navigation sidebar open beside the filters.
    page.set_viewport_size({"width": 1280, "height": 800})
    page.goto(f"/admin/login/?next={CHANGELIST}")
    page.get_by_label("Username").fill("root")
    page.get_by_label("Password").fill("pw-root")
    with page.expect_response(lambda r: urlsplit(r.url).path == CHANGELIST) as landed:
        page.get_by_role("button", name="Log in").click()
    assert landed.value.status == 200
    page.wait_for_url(lambda url: urlsplit(url).path == CHANGELIST)

    # One badge per health state, most urgent first; the summary counts every state.
    rows = page.locator("#result_list tbody tr")
    expect(rows).to_have_count(4)
    assert badge_labels(rows.locator(".manychat-health")) == [
        "Needs re-auth",
        "Expired",
        "Failing, backing off",
        "Healthy",
    ]
    expect(admin_row(page, "Revoked Bakery").locator(".manychat-health-reauth")).to_be_visible()
    expect(admin_row(page, due.page_name).locator(".manychat-health-expired")).to_be_visible()
    expect(admin_row(page, "Flaky Florist").locator(".manychat-health-backoff")).to_be_visible()
    expect(admin_row(page, "Steady Stationer").locator(".manychat-health-healthy")).to_be_visible()
    expect(admin_row(page, "Steady Stationer").locator("td.field-page")).to_contain_text("3000003 · API key")
    error = admin_row(page, "Flaky Florist").locator("td.field-short_last_error .manychat-error")
    expect(error).to_contain_text("http_503")
    expect(error).to_have_attribute("title", failing.last_error)  # the whole message on hover
    summary = page.get_by_role("navigation", name="Connections by health").locator("li")
    counts = dict(
        zip(badge_labels(summary.locator(".manychat-health")), summary.locator(".count").all_inner_texts(), strict=True)
    )
    assert counts == {
        "Needs re-auth": "1",
        "Expired": "1",
        "Failing, backing off": "1",
        "Expiring soon": "0",
        "Healthy": "1",
        "Disconnected": "0",
    }
    # Every column fits beside the open sidebar and the filters: nothing is cut off or scrolled.
    expect(page.locator("#nav-sidebar")).to_be_visible()
    widths = page.locator("#changelist .results").evaluate(
        "el => ({shown: el.clientWidth, needed: el.scrollWidth, table: el.querySelector('#result_list').scrollWidth})"
    )
    assert widths["needed"] <= widths["shown"] and widths["table"] <= widths["shown"], widths
    last_header = page.locator("#result_list thead th").last
    expect(last_header).to_have_text("Last error")
    assert last_header.bounding_box()["x"] + last_header.bounding_box()["width"] <= 1280
    assert_no_secrets(page.content(), *everyone)

    # The health filter narrows the rows to that state.
    by_health = page.locator('#changelist-filter details[data-filter-title="health"]')
    assert by_health.locator("summary").inner_text().strip().endswith("By health")
    assert by_health.get_by_role("link").all_inner_texts() == ["All", *counts]
    by_health.get_by_role("link", name="Needs re-auth", exact=True).click()
    page.wait_for_url("**?health=reauth")
    expect(rows).to_have_count(1)
    expect(rows.first.locator(".manychat-health")).to_have_text("✖\xa0Needs re-auth")
    expect(rows.first).to_contain_text("Revoked Bakery")
    by_health.get_by_role("link", name="All", exact=True).click()
    page.wait_for_url(f"**{CHANGELIST}?")
    expect(rows).to_have_count(4)

    # "Refresh tokens now" on the due row goes over HTTP to the sandbox.
    admin_row(page, due.page_name).locator("input.action-select").check()
    page.locator("select[name=action]").select_option(label="Refresh tokens now")
    with page.expect_response(lambda r: urlsplit(r.url).path == CHANGELIST and r.request.method == "GET") as done:
        page.get_by_role("button", name="Go").click()
    assert done.value.status == 200
    expect(page.locator("ul.messagelist li")).to_have_text(["Refresh tokens now: 1 refreshed."])
    expect(page.locator("ul.messagelist li.success")).to_have_count(1)
    refreshed_row = admin_row(page, due.page_name)
    expect(refreshed_row.locator(".manychat-health")).to_have_text("✔\xa0Healthy")
    expect(refreshed_row.locator("td.field-last_refreshed")).to_have_text(re.compile(r"^\d+ s ago\s*$"))

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
