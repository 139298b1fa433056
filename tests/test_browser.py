"""End to end in a real browser: Debian's Chromium, driven by Playwright, against live_server and the sandbox.

Each test leaves a screenshot of its final page in ``artifacts/browser/``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings

from manychat_oauth.models import ManychatConnection

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
