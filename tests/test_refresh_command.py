"""`manychat_refresh_tokens` over real HTTP to the sandbox: selection, output and exit codes."""

from __future__ import annotations

import io
import json

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from manychat_oauth.models import ManychatConnection
from manychat_oauth.sandbox.models import SandboxToken

from .tokens import COUNTER, make_connection, sandbox_token, token_requests_seen

pytestmark = pytest.mark.django_db(transaction=True)


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def run(*args: str, stderr: io.StringIO | None = None) -> tuple[int, str, str]:
    """Run the command; return (exit code, stdout, stderr)."""
    out, err = io.StringIO(), stderr or io.StringIO()
    try:
        call_command("manychat_refresh_tokens", *args, stdout=out, stderr=err)
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    return code, out.getvalue(), err.getvalue()


def test_default_run_refreshes_only_due_connections_and_exits_0(sandbox, user):
    due = make_connection(user, expires_in=60)
    fresh = make_connection(user, expires_in=86400)
    fresh_token = sandbox_token(fresh)

    code, out, err = run()

    assert code == 0
    assert out.strip().endswith("refreshed=1 reauth_required=0 failed=0 skipped=0")
    assert sandbox_token(due).parent is not None
    assert sandbox_token(fresh) == fresh_token
    assert err == ""  # no progress bar when stderr is not a terminal


def test_progress_is_drawn_on_a_terminal(sandbox, user):
    for _ in range(12):
        make_connection(user)
    code, _, err = run("--concurrency", "4", stderr=Terminal())
    assert code == 0
    assert "\r10 processed  refreshed=10" in err
    assert err.endswith("\r12 processed  refreshed=12\n")


def test_dry_run_lists_what_would_be_refreshed_and_why_and_changes_nothing(sandbox, user):
    expired = make_connection(user, expires_in=-5)
    soon = make_connection(user, expires_in=60)
    make_connection(user, expires_in=86400)
    counter = sandbox.fault("token", times=COUNTER)

    code, out, _ = run("--dry-run")

    assert code == 0
    assert f"would refresh connection {expired.pk}: expired" in out
    assert f"would refresh connection {soon.pk}: expires within the margin" in out
    assert "2 connection(s) would be refreshed" in out
    assert token_requests_seen(counter) == 0
    assert ManychatConnection.objects.filter(last_refreshed_at__isnull=False).count() == 3
    assert ManychatConnection.objects.filter(refresh_lease_owner="").count() == 3


def test_dry_run_json(sandbox, user):
    soon = make_connection(user, expires_in=60)
    code, out, _ = run("--dry-run", "--json")
    assert code == 0
    assert json.loads(out) == {
        "dry_run": True,
        "would_refresh": [{"connection_id": soon.pk, "reason": "expires within the margin"}],
        "config_error": None,
    }


def test_dry_run_reports_a_configuration_error_with_exit_2(sandbox, user, settings):
    settings.MANYCHAT_OAUTH_CLIENT_ID = None
    make_connection(user)
    code, out, err = run("--dry-run")
    assert code == 2
    assert "1 connection(s) would be refreshed" in out
    assert "MANYCHAT_OAUTH_CLIENT_ID is not set" in err


def test_site_without_oauth_settings_and_no_oauth_connections_exits_0(user, settings):
    settings.MANYCHAT_OAUTH_CLIENT_ID = None
    settings.MANYCHAT_OAUTH_CLIENT_SECRET = None
    ManychatConnection.objects.create(user=user, auth_type="api_key", page_id="7", access_token="7:k")
    # The key connection was checked recently: nothing at all to do.
    ManychatConnection.objects.update(last_checked_at=timezone.now())
    assert run()[0] == 0
    assert run("--dry-run")[0] == 0


def test_json_output(sandbox, user):
    ok = make_connection(user)
    broken = make_connection(user)
    SandboxToken.objects.filter(refresh_token=broken.refresh_token).update(revoked=True)

    code, out, _ = run("--json", "--concurrency", "1")

    assert code == 1
    result = json.loads(out)
    assert result["refreshed"] == 1 and result["reauth_required"] == 1 and result["failed"] == 0
    assert result["exit_code"] == 1 and result["config_error"] is None
    assert result["problems"] == [
        {
            "connection_id": broken.pk,
            "outcome": "reauth_required",
            "error": "invalid_grant",
            "reason": result["problems"][0]["reason"],
        }
    ]
    assert ok.refresh_token not in out and broken.refresh_token not in out


def test_exit_1_when_a_refresh_fails(sandbox, user):
    connection = make_connection(user)
    sandbox.fault("token", status=502, body="<html>bad gateway</html>", content_type="text/html", times=1)
    code, out, _ = run()
    assert code == 1
    assert f"connection {connection.pk}: failed (http_502)" in out
    assert "refreshed=0 reauth_required=0 failed=1 skipped=0" in out


def test_exit_1_when_a_connection_newly_needs_reauthorization(sandbox, user):
    connection = make_connection(user)
    SandboxToken.objects.filter(refresh_token=connection.refresh_token).update(revoked=True)
    code, out, _ = run()
    assert code == 1
    assert "reauth_required=1" in out
    # Next run: nothing is attempted, so nothing failed.
    assert run()[0] == 0


def test_exit_2_on_invalid_client_with_no_connection_marked(sandbox, user, settings):
    settings.MANYCHAT_SANDBOX_CLIENT_SECRET = "rotated-at-the-provider"
    rows = [make_connection(user) for _ in range(3)]
    code, out, err = run("--json")
    assert code == 2
    assert json.loads(out)["config_error"]
    assert "no connection was marked" in err and "MANYCHAT_OAUTH_CLIENT_SECRET" in err
    for row in rows:
        row.refresh_from_db()
        assert row.status == "active" and row.consecutive_failures == 0 and row.last_error == ""
        assert row.next_attempt_at is None and row.refresh_lease_until is None


def test_exit_2_when_credentials_are_missing(sandbox, user, settings):
    settings.MANYCHAT_OAUTH_CLIENT_SECRET = None
    make_connection(user)
    code, out, err = run()
    assert code == 2
    assert "MANYCHAT_OAUTH_CLIENT_SECRET is not set" in err


def test_exit_0_when_nothing_is_due(sandbox, user):
    make_connection(user, expires_in=86400)
    code, out, _ = run()
    assert code == 0 and "refreshed=0 reauth_required=0 failed=0 skipped=0" in out


def test_connection_option_refreshes_only_those_even_if_not_due(sandbox, user):
    chosen = make_connection(user, expires_in=86400)
    other = make_connection(user, expires_in=60)
    code, out, _ = run("--connection", str(chosen.pk))
    assert code == 0 and "refreshed=1" in out
    assert sandbox_token(chosen).parent is not None
    assert sandbox_token(other).parent is None


def test_all_refreshes_every_active_oauth_connection_but_never_reauth_or_disconnected(sandbox, user):
    fresh = make_connection(user, expires_in=86400)
    backing_off = make_connection(user, consecutive_failures=4, next_attempt_at="2999-01-01T00:00:00Z")
    reauth = make_connection(user, status=ManychatConnection.Status.REAUTH_REQUIRED)
    disconnected = make_connection(user, status=ManychatConnection.Status.DISCONNECTED)
    untouched = {c.pk: sandbox_token(c) for c in (reauth, disconnected)}

    code, out, _ = run("--all")

    assert code == 0 and "refreshed=2" in out
    assert sandbox_token(fresh).parent is not None and sandbox_token(backing_off).parent is not None
    for connection in (reauth, disconnected):
        token = sandbox_token(connection)
        assert token == untouched[connection.pk] and token.refresh_uses == 0
        assert connection.status != ManychatConnection.Status.ACTIVE


def test_margin_option_widens_the_selection(sandbox, user):
    connection = make_connection(user, expires_in=3000, refreshed_ago=86400)
    assert "refreshed=0" in run()[1]
    code, out, _ = run("--margin", "3600")
    assert code == 0 and "refreshed=1" in out
    assert sandbox_token(connection).parent is not None


@pytest.mark.parametrize(
    "args, message",
    [
        (["--concurrency", "0"], "--concurrency must be at least 1"),
        (["--margin", "-1"], "--margin must not be negative"),
        (["--all", "--connection", "1"], "either --all or --connection"),
    ],
)
def test_bad_options_are_refused(db, args, message):
    with pytest.raises(CommandError, match=message):
        call_command("manychat_refresh_tokens", *args, stdout=io.StringIO())


def test_dry_run_with_all_or_ids_says_why_each_row_would_be_refreshed(sandbox, user):
    fresh = make_connection(user, expires_in=86400)
    expired = make_connection(user, expires_in=-5)
    out = run("--dry-run", "--all")[1]
    assert f"would refresh connection {fresh.pk}: --all (not due yet)" in out
    assert f"would refresh connection {expired.pk}: expired" in out
    out = run("--dry-run", "--connection", str(fresh.pk))[1]
    assert f"would refresh connection {fresh.pk}: requested by id" in out
    assert f"connection {expired.pk}" not in out


def test_exit_2_when_the_token_url_is_not_absolute(sandbox, user, settings):
    settings.MANYCHAT_OAUTH_TOKEN_URL = "manychat.com/oauth/token"
    make_connection(user)
    code, _, err = run()
    assert code == 2 and "MANYCHAT_OAUTH_TOKEN_URL is not an absolute" in err
