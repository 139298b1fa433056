"""The provider fault matrix: every way Manychat can fail, against every call we make to it.

Four calls: the code exchange (the OAuth callback), the token refresh
(``manychat_refresh_tokens``), ``getInfo`` when a user connects a page API key,
and ``getInfo`` in the health check of an API-key connection (the same command).
Each fault is injected in the sandbox (real HTTP through ``live_server``), or
the endpoint setting points at a closed port. For every cell the test checks
that the user sees our own page (never Django's 500 page), that the stored
credentials are exactly what they were, and the connection's status and
``last_error``.

``ROWS`` is the single source of the README section "Provider fault matrix":
``test_the_readme_table_is_this_matrix`` fails when the two differ, and prints
the table to paste.
"""

from __future__ import annotations

import datetime as dt
import io
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from django.core.cache import cache
from django.core.management import call_command
from django.utils import timezone

from manychat_oauth.models import ManychatConnection
from manychat_oauth.sandbox.models import SandboxApiKey, SandboxPage

from .conftest import Sandbox, closed_port, start_flow

#: MANYCHAT_OAUTH_HTTP_TIMEOUT during these tests (seconds); the slow faults exceed it.
TIMEOUT = 0.5
README = Path(__file__).resolve().parent.parent / "README.md"

ACTIVE = "active"
REAUTH = "reauth_required"
NOT_ANSWERING = "Manychat is not answering"
CONNECTION_FAILED = "Connection failed"
SETUP_PROBLEM = "Connecting with Manychat is not available"
TRY_LATER = "We could not reach Manychat, try again later."
NOT_UNDERSTOOD = "answer could not be understood"
KEY_REFUSED = "Manychat did not accept this API key"


@dataclass(frozen=True)
class Page:
    """Our page the user sees: HTTP status and a phrase from it."""

    status: int
    says: str

    def cell(self) -> str:
        return f"{self.status} “{self.says}”"


@dataclass(frozen=True)
class Recorded:
    """What a background call records on the connection (``error=None``: ``last_error`` unchanged)."""

    status: str
    error: str | None
    exit_code: int
    #: Bounds on the delay before the next refresh attempt (seconds from now).
    retry_within: tuple[float, float] | None = None

    def cell(self) -> str:
        text = f"`{self.status}`, " + (f"`{self.error}`" if self.error else "`last_error` unchanged")
        if self.retry_within:
            low, high = self.retry_within
            text += f", next try in {low:g}–{high:g} s"
        return f"{text}; exit {self.exit_code}"


@dataclass(frozen=True)
class Fault:
    id: str
    label: str
    #: ``sandbox.fault()`` arguments; ``None``: point the endpoint at a closed port instead.
    inject: dict[str, Any] | None
    exchange: Page
    refresh: Recorded
    api_key: Page
    check: Recorded
    notes: list[str] = field(default_factory=list)


def failing(code: str, *, retry_within: tuple[float, float] | None = (48, 72)) -> Recorded:
    """A transient refresh failure: still active, retried with backoff (60 s ±20% after a first failure)."""
    return Recorded(ACTIVE, code, 1, retry_within)


def check_failed(code: str) -> Recorded:
    return Recorded(ACTIVE, code, 1)


def down(code: str, **extra: Any) -> dict[str, Any]:
    """The columns of a fault every call treats as "Manychat is unavailable"."""
    return {
        "exchange": Page(502, NOT_ANSWERING),
        "refresh": failing(code, **extra),
        "api_key": Page(503, TRY_LATER),
        "check": check_failed(code),
    }


ROWS = [
    Fault("500", "HTTP 500", {"status": 500, "body": {"error": "server_error"}}, **down("http_500")),
    Fault(
        "502-html",
        "HTTP 502 with an HTML body",
        {"status": 502, "body": "<html><body><h1>502 Bad Gateway</h1></body></html>", "content_type": "text/html"},
        **down("http_502"),
    ),
    Fault("503", "HTTP 503", {"status": 503, "body": ""}, **down("http_503")),
    Fault(
        "429-retry-after",
        "HTTP 429 with `Retry-After: 120`",
        {"status": 429, "body": {"error": "slow_down"}, "retry_after": "120"},
        **down("http_429", retry_within=(120, 121)),
    ),
    Fault("429", "HTTP 429 without `Retry-After`", {"status": 429, "body": ""}, **down("http_429")),
    Fault(
        "read-timeout",
        "read timeout (the provider acts, then answers too late)",
        {"latency_ms": 1500, "latency_after": True},
        **down("read_timeout"),
    ),
    Fault("connection-refused", "connection refused (closed port)", None, **down("connection_error")),
    Fault(
        "not-json",
        "HTTP 200 with a body that is not JSON",
        {"status": 200, "body": "<html>Welcome</html>", "content_type": "text/html"},
        exchange=Page(502, NOT_ANSWERING),
        refresh=failing("invalid_token_response"),
        api_key=Page(400, NOT_UNDERSTOOD),
        check=check_failed("invalid_response"),
    ),
    Fault(
        "no-access-token",
        "HTTP 200, JSON without `access_token` (getInfo: without `status`)",
        {"status": 200, "body": {"token_type": "Bearer", "expires_in": 3600}},
        exchange=Page(502, NOT_ANSWERING),
        refresh=failing("invalid_token_response"),
        api_key=Page(400, NOT_UNDERSTOOD),
        check=check_failed("invalid_response"),
    ),
    Fault(
        "invalid-grant",
        "HTTP 400 `invalid_grant`",
        {"status": 400, "body": {"error": "invalid_grant"}},
        exchange=Page(400, CONNECTION_FAILED),
        refresh=Recorded(REAUTH, "invalid_grant", 1),
        api_key=Page(400, KEY_REFUSED),
        check=check_failed("api_error"),
    ),
    Fault(
        "invalid-client",
        "HTTP 401 `invalid_client`",
        {"status": 401, "body": {"error": "invalid_client"}},
        exchange=Page(503, SETUP_PROBLEM),
        refresh=Recorded(ACTIVE, None, 2),
        api_key=Page(400, KEY_REFUSED),
        check=Recorded(REAUTH, "unauthorized", 1),
    ),
    Fault(
        "slow-body",
        "a body trickling 16 bytes every 0.2 s (each read within the timeout)",
        {"chunk_delay_ms": 200},
        **down("read_timeout"),
    ),
    Fault(
        "stalled-body",
        "a body that stops after 16 bytes for longer than the timeout",
        {"chunk_delay_ms": 800},
        **down("read_timeout"),
    ),
]
PARAMS = [pytest.param(row, id=row.id) for row in ROWS]

KEPT_ACCESS = "kept-access-token-4d1f"
KEPT_REFRESH = "kept-refresh-token-9a2e"
PAGE_ID = "3000003"


def inject(sandbox: Sandbox, settings: Any, fault: Fault, endpoint: str) -> None:
    if fault.inject is None:
        dead = f"http://127.0.0.1:{closed_port()}"
        if endpoint == "token":
            settings.MANYCHAT_OAUTH_TOKEN_URL = f"{dead}/oauth/token"
        else:
            settings.MANYCHAT_OAUTH_API_BASE_URL = dead
        return
    sandbox.fault(endpoint, times=1, **fault.inject)


def assert_our_page(response: Any, page: Page) -> None:
    assert response.status_code == page.status
    assert {t.name for t in response.templates} & {
        "manychat_oauth/error.html",
        "manychat_oauth/connect_api_key.html",
    }, "not our own page"
    assert page.says in response.content.decode()


def run_command(*args: str) -> int:
    try:
        call_command("manychat_refresh_tokens", *args, stdout=io.StringIO(), stderr=io.StringIO())
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


def assert_recorded(connection: ManychatConnection, expected: Recorded, exit_code: int, *, error_before: str) -> None:
    connection.refresh_from_db()
    assert (connection.status, exit_code) == (expected.status, expected.exit_code)
    if expected.error is None:
        assert connection.last_error == error_before
    else:
        assert connection.last_error.startswith(f"{expected.error}")
        assert connection.last_error[len(expected.error)] in ": "


@pytest.fixture(autouse=True)
def _timeout(settings: Any, request: pytest.FixtureRequest) -> Any:
    settings.MANYCHAT_OAUTH_HTTP_TIMEOUT = TIMEOUT
    cache.clear()  # the API-key form's rate limit
    yield
    # Let the sandbox finish a request we gave up on while this test's database still exists.
    fault = getattr(getattr(request.node, "callspec", None), "params", {}).get("fault")
    if isinstance(fault, Fault) and fault.inject:
        time.sleep(max(fault.inject.get("latency_ms", 0), 2 * fault.inject.get("chunk_delay_ms", 0)) / 1000)


@pytest.mark.parametrize("fault", PARAMS)
def test_code_exchange(fault, sandbox, user, user_client, settings):
    kept = ManychatConnection.objects.create(
        user=user, page_id="1000001", page_name="Kept", access_token=KEPT_ACCESS, refresh_token=KEPT_REFRESH
    )
    query = sandbox.consent(start_flow(user_client))
    inject(sandbox, settings, fault, "token")

    assert_our_page(user_client.get("/manychat/callback/", query), fault.exchange)
    kept.refresh_from_db()
    assert (kept.access_token, kept.refresh_token, kept.status) == (KEPT_ACCESS, KEPT_REFRESH, ACTIVE)
    assert ManychatConnection.objects.count() == 1


@pytest.mark.parametrize("fault", PARAMS)
def test_refresh(fault, sandbox, user, user_client, settings):
    query = sandbox.consent(start_flow(user_client))
    assert user_client.get("/manychat/callback/", query).status_code == 302
    connection = ManychatConnection.objects.get()
    ManychatConnection.objects.filter(pk=connection.pk).update(
        expires_at=timezone.now() - dt.timedelta(minutes=1), last_error="earlier: kept"
    )
    tokens = (connection.access_token, connection.refresh_token)
    inject(sandbox, settings, fault, "token")

    started = timezone.now()
    exit_code = run_command("--connection", str(connection.pk))
    assert_recorded(connection, fault.refresh, exit_code, error_before="earlier: kept")
    assert (connection.access_token, connection.refresh_token) == tokens
    if fault.refresh.retry_within:
        low, high = fault.refresh.retry_within
        assert connection.next_attempt_at is not None
        delay = (connection.next_attempt_at - started).total_seconds()
        assert low - 1 <= delay <= high + 5
        assert connection.consecutive_failures == 1


def api_key_page(sandbox: Sandbox) -> str:
    page, _ = SandboxPage.objects.get_or_create(page_id=PAGE_ID, defaults={"name": "Fault Florist"})
    key = f"{PAGE_ID}:{'f' * 32}"
    SandboxApiKey.objects.create(page=page, key=key)
    return key


@pytest.mark.parametrize("fault", PARAMS)
def test_api_key_connect(fault, sandbox, user, user_client, settings):
    key = api_key_page(sandbox)
    kept = ManychatConnection.objects.create(
        user=user, auth_type="api_key", page_id=PAGE_ID, page_name="Kept", access_token=KEPT_ACCESS
    )
    inject(sandbox, settings, fault, "getinfo")

    assert_our_page(user_client.post("/manychat/api-key/", {"api_key": key}), fault.api_key)
    kept.refresh_from_db()
    assert (kept.access_token, kept.status, kept.page_name) == (KEPT_ACCESS, ACTIVE, "Kept")
    assert ManychatConnection.objects.count() == 1


@pytest.mark.parametrize("fault", PARAMS)
def test_health_check(fault, sandbox, user, settings):
    key = api_key_page(sandbox)
    connection = ManychatConnection.objects.create(
        user=user, auth_type="api_key", page_id=PAGE_ID, page_name="Kept", access_token=key, last_error="earlier: kept"
    )
    inject(sandbox, settings, fault, "getinfo")

    exit_code = run_command()
    assert_recorded(connection, fault.check, exit_code, error_before="earlier: kept")
    assert (connection.access_token, connection.page_name) == (key, "Kept")


def test_without_faults_every_call_succeeds(sandbox, user, user_client):
    """The baseline the matrix departs from: the same calls, no fault."""
    query = sandbox.consent(start_flow(user_client))
    assert user_client.get("/manychat/callback/", query).status_code == 302
    oauth = ManychatConnection.objects.get()
    ManychatConnection.objects.filter(pk=oauth.pk).update(expires_at=timezone.now() - dt.timedelta(minutes=1))
    key = api_key_page(sandbox)
    assert user_client.post("/manychat/api-key/", {"api_key": key}).status_code == 302
    assert run_command("--connection", str(oauth.pk)) == 0
    keyed = ManychatConnection.objects.get(auth_type="api_key")
    ManychatConnection.objects.filter(pk=keyed.pk).update(last_checked_at=None)
    assert run_command() == 0
    oauth.refresh_from_db()
    keyed.refresh_from_db()
    assert oauth.expires_at > timezone.now() and oauth.last_error == ""
    assert keyed.last_checked_at is not None and keyed.last_error == ""


# -- The README table -----------------------------------------------------------

HEADER = (
    "| fault | code exchange (callback page) | refresh (`manychat_refresh_tokens`) "
    "| `getInfo`: API-key connect (page) | `getInfo`: health check |"
)


def render_table() -> str:
    lines = [HEADER, "|---|---|---|---|---|"]
    for row in ROWS:
        cells = [row.label, row.exchange.cell(), row.refresh.cell(), row.api_key.cell(), row.check.cell()]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def readme_table() -> str:
    text = README.read_text(encoding="utf-8")
    section = text.split("\n## Provider fault matrix\n", 1)
    assert len(section) == 2, "README has no '## Provider fault matrix' section"
    body = section[1].split("\n## ", 1)[0]
    return "\n".join(line for line in body.splitlines() if line.startswith("|"))


def test_the_readme_table_is_this_matrix():
    expected = render_table()
    assert readme_table() == expected, f"Paste this table into README.md:\n\n{expected}\n"


def test_the_matrix_covers_every_fault_the_issue_names():
    ids = {row.id for row in ROWS}
    assert {
        "500",
        "502-html",
        "503",
        "429-retry-after",
        "429",
        "read-timeout",
        "connection-refused",
        "not-json",
        "no-access-token",
        "invalid-grant",
        "invalid-client",
        "slow-body",
    } <= ids
    assert all(re.fullmatch(r"[a-z0-9-]+", i) for i in ids) and len(ids) == len(ROWS)


def test_an_oversized_answer_is_refused_without_reading_it_all(sandbox, user, user_client):
    key = api_key_page(sandbox)
    sandbox.fault("getinfo", times=1, status=200, body={"status": "success", "data": {"id": 1, "pad": "x" * 2**21}})
    assert_our_page(user_client.post("/manychat/api-key/", {"api_key": key}), Page(503, TRY_LATER))
    assert not ManychatConnection.objects.exists()
