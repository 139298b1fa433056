"""refresh.py over real HTTP to the sandbox: every outcome, backoff, due selection, lazy tokens."""

from __future__ import annotations

import datetime as dt
import threading
import time

import pytest
from django.db import connection as db_connection
from django.db import connections
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from manychat_oauth import refresh
from manychat_oauth.exceptions import InvalidClient, ProviderUnavailable
from manychat_oauth.models import ManychatConnection
from manychat_oauth.refresh import (
    BACKOFF_BASE,
    BACKOFF_MAX,
    LEASE_HELD,
    ConnectionNotActive,
    Outcome,
    backoff_delay,
    due_reason,
    effective_margin,
    iter_due,
    refresh_connection,
    refresh_due_connections,
)
from manychat_oauth.sandbox.models import SandboxToken
from manychat_oauth.signals import reauth_required, tokens_refreshed

from .tokens import COUNTER, issue_tokens, make_connection, sandbox_token, token_requests_seen

pytestmark = pytest.mark.django_db(transaction=True)


class Received:
    """Collects the connections a signal was sent for."""

    def __init__(self, signal):
        self.signal = signal
        self.pks: list[int] = []

    def __enter__(self):
        self.signal.connect(self, weak=False, dispatch_uid=f"test-{id(self)}")
        return self

    def __exit__(self, *exc):
        self.signal.disconnect(dispatch_uid=f"test-{id(self)}")

    def __call__(self, sender, connection, **kwargs):
        assert sender is ManychatConnection
        self.pks.append(connection.pk)


def wait_for_lease(connection, seconds=10):
    """Until another thread has claimed ``connection``."""
    deadline = time.monotonic() + seconds
    while not ManychatConnection.objects.filter(pk=connection.pk, refresh_lease_until__isnull=False).exists():
        assert time.monotonic() < deadline
        time.sleep(0.01)


def stored(connection):
    connection.refresh_from_db()
    return (connection.access_token, connection.refresh_token, connection.expires_at)


# -- Success ----------------------------------------------------------------


def test_refresh_stores_new_tokens_and_rotated_refresh_token_in_one_write(sandbox, user, settings):
    settings.MANYCHAT_SANDBOX_TOKEN_LIFETIME = 7200
    connection = make_connection(
        user, consecutive_failures=3, last_error="http_503: earlier", next_attempt_at=timezone.now()
    )
    old = sandbox_token(connection)
    before = timezone.now()
    with Received(tokens_refreshed) as refreshed, CaptureQueriesContext(db_connection) as queries:
        result = refresh_connection(connection)

    assert result.outcome is Outcome.REFRESHED and result.ok
    writes = [q["sql"] for q in queries if q["sql"].startswith("UPDATE") and "access_token" in q["sql"]]
    assert len(writes) == 1
    assert "refresh_token" in writes[0] and "expires_at" in writes[0] and "consecutive_failures" in writes[0]
    old.refresh_from_db()
    assert old.rotated_at is not None and old.refresh_uses == 1
    latest = SandboxToken.objects.get(parent=old)
    connection.refresh_from_db()  # also reloaded by refresh_connection; read again to be sure
    assert connection.access_token == latest.access_token
    assert connection.refresh_token == latest.refresh_token != old.refresh_token
    assert before + dt.timedelta(seconds=7199) <= connection.expires_at <= timezone.now() + dt.timedelta(seconds=7200)
    assert connection.last_refreshed_at >= before
    assert connection.consecutive_failures == 0 and connection.last_error == "" and connection.next_attempt_at is None
    assert connection.refresh_lease_until is None and connection.refresh_lease_owner == ""
    assert refreshed.pks == [connection.pk]


def test_refresh_keeps_old_refresh_token_when_provider_returns_none(sandbox, user):
    connection = make_connection(user)
    _, old_refresh, _ = stored(connection)
    sandbox.fault(
        "token", status=200, body={"access_token": "sbx_at_new", "token_type": "Bearer", "expires_in": 900}, times=1
    )
    result = refresh_connection(connection)
    assert result.outcome is Outcome.REFRESHED
    access, refresh_token, expires_at = stored(connection)
    assert access == "sbx_at_new"
    assert refresh_token == old_refresh
    assert expires_at - timezone.now() <= dt.timedelta(seconds=900)


def test_refresh_of_a_fresh_connection_is_skipped_without_calling_the_provider(sandbox, user):
    connection = make_connection(user, expires_in=86400)
    counter = sandbox.fault("token", times=COUNTER)
    result = refresh_connection(connection)
    assert result.outcome is Outcome.SKIPPED
    assert token_requests_seen(counter) == 0


def test_forced_refresh_refreshes_a_fresh_connection(sandbox, user):
    connection = make_connection(user, expires_in=86400)
    old = sandbox_token(connection)
    assert refresh_connection(connection, force=True).outcome is Outcome.REFRESHED
    assert sandbox_token(connection).parent == old


# -- invalid_grant ----------------------------------------------------------


def test_invalid_grant_marks_reauth_required_keeps_tokens_and_is_never_retried(sandbox, user):
    connection = make_connection(user)
    token = sandbox_token(connection)
    SandboxToken.objects.filter(pk=token.pk).update(revoked=True)  # the user revoked access at Manychat
    before = stored(connection)
    with Received(reauth_required) as events:
        result = refresh_connection(connection)

    assert result.outcome is Outcome.REAUTH_REQUIRED and result.error_code == "invalid_grant"
    connection.refresh_from_db()
    assert connection.status == ManychatConnection.Status.REAUTH_REQUIRED
    assert "invalid_grant" in connection.last_error
    assert stored(connection) == before
    assert connection.refresh_lease_until is None
    assert events.pks == [connection.pk]

    # No further attempts, whatever the caller asks for.
    assert refresh_connection(connection, force=True).outcome is Outcome.SKIPPED
    run = refresh_due_connections(force=True)
    assert (run.refreshed, run.failed, run.reauth_required) == (0, 0, 0)
    with pytest.raises(ConnectionNotActive):
        connection.get_access_token()
    token.refresh_from_db()
    assert token.refresh_uses == 1


# -- invalid_client ---------------------------------------------------------


def test_invalid_client_marks_no_connection_and_stops_the_run(sandbox, user, settings):
    settings.MANYCHAT_SANDBOX_CLIENT_SECRET = "the-secret-the-provider-expects"
    connections_ = [make_connection(user) for _ in range(6)]
    before = [stored(c) for c in connections_]
    counter = sandbox.fault("token", times=COUNTER)

    run = refresh_due_connections(concurrency=1)

    assert run.exit_code == 2 and "invalid_client" in run.config_error
    assert (run.refreshed, run.failed, run.reauth_required) == (0, 0, 0)
    assert token_requests_seen(counter) == 1  # the run stopped at the first answer
    for connection, tokens in zip(connections_, before, strict=True):
        assert stored(connection) == tokens
        assert connection.status == ManychatConnection.Status.ACTIVE
        assert connection.consecutive_failures == 0 and connection.last_error == ""
        assert connection.next_attempt_at is None and connection.refresh_lease_until is None
    assert SandboxToken.objects.filter(refresh_uses__gt=0).count() == 0


def test_invalid_client_on_a_single_refresh_marks_nothing(sandbox, user, settings):
    settings.MANYCHAT_SANDBOX_CLIENT_ID = "another-client"
    connection = make_connection(user)
    before = stored(connection)
    result = refresh_connection(connection)
    assert result.outcome is Outcome.CONFIG_ERROR and result.error_code == "invalid_client"
    connection.refresh_from_db()
    assert stored(connection) == before
    assert connection.status == ManychatConnection.Status.ACTIVE and connection.consecutive_failures == 0
    assert connection.refresh_lease_until is None
    with pytest.raises(InvalidClient):
        connection.get_access_token()


def test_missing_client_secret_stops_before_any_request(sandbox, user, settings):
    settings.MANYCHAT_OAUTH_CLIENT_SECRET = ""
    make_connection(user)
    counter = sandbox.fault("token", times=COUNTER)
    run = refresh_due_connections()
    assert run.exit_code == 2 and "MANYCHAT_OAUTH_CLIENT_SECRET" in run.config_error
    assert token_requests_seen(counter) == 0


# -- Transient failures -----------------------------------------------------

TRANSIENT = {
    "500 json": ({"status": 500, "body": {"error": "server_error"}}, "http_500", None),
    "502 html": ({"status": 502, "body": "<html>Bad gateway</html>", "content_type": "text/html"}, "http_502", None),
    "503 retry-after": ({"status": 503, "body": "", "retry_after": "120"}, "http_503", 120),
    "429 retry-after": ({"status": 429, "body": {"error": "slow_down"}, "retry_after": "3600"}, "http_429", 3600),
    "429 without retry-after": ({"status": 429, "body": ""}, "http_429", None),
    "200 not json": (
        {"status": 200, "body": "<html>ok</html>", "content_type": "text/html"},
        "invalid_token_response",
        None,
    ),
    "200 without access_token": ({"status": 200, "body": {"token_type": "Bearer"}}, "invalid_token_response", None),
}


@pytest.mark.parametrize("fault, code, retry_after", TRANSIENT.values(), ids=TRANSIENT.keys())
def test_transient_failure_keeps_tokens_counts_failure_and_backs_off(sandbox, user, fault, code, retry_after):
    connection = make_connection(user, consecutive_failures=2)
    before = stored(connection)
    sandbox.fault("token", times=1, **fault)
    start = timezone.now()

    result = refresh_connection(connection)

    end = timezone.now()
    assert result.outcome is Outcome.FAILED and result.error_code == code
    connection.refresh_from_db()
    assert stored(connection) == before
    assert connection.status == ManychatConnection.Status.ACTIVE
    assert connection.consecutive_failures == 3
    assert connection.last_error.startswith(code)
    assert connection.refresh_lease_until is None
    # Third failure: one minute doubled twice, +/-20% jitter.
    low, high = 0.8 * BACKOFF_BASE * 4, 1.2 * BACKOFF_BASE * 4
    if retry_after is not None:
        low, high = max(low, retry_after), max(high, retry_after)
    assert start + dt.timedelta(seconds=low) <= connection.next_attempt_at <= end + dt.timedelta(seconds=high)
    assert result.retry_at == connection.next_attempt_at
    assert sandbox_token(connection).refresh_uses == 0  # the provider never processed it


def test_timeout_before_the_provider_answers_keeps_tokens_and_backs_off(sandbox, user, settings):
    settings.MANYCHAT_OAUTH_HTTP_TIMEOUT = 0.3
    connection = make_connection(user)
    before = stored(connection)
    sandbox.fault("token", latency_ms=1500, times=1)
    result = refresh_connection(connection)
    assert result.outcome is Outcome.FAILED and result.error_code == "read_timeout"
    connection.refresh_from_db()
    assert stored(connection) == before
    assert connection.consecutive_failures == 1
    assert connection.next_attempt_at > timezone.now() + dt.timedelta(seconds=0.8 * BACKOFF_BASE - 5)
    time.sleep(1.5)  # let the sandbox finish the delayed request


def test_read_timeout_after_the_provider_processed_the_refresh_is_recorded_as_ambiguous(sandbox, user, settings):
    settings.MANYCHAT_OAUTH_HTTP_TIMEOUT = 0.5
    connection = make_connection(user)
    before = stored(connection)
    old = sandbox_token(connection)
    sandbox.fault("token", latency_ms=1500, latency_after=True, times=1)

    result = refresh_connection(connection)

    assert result.outcome is Outcome.FAILED and result.error_code == "read_timeout"
    connection.refresh_from_db()
    assert stored(connection) == before  # nothing to store: the answer never arrived
    assert "ambiguous" in connection.last_error
    assert connection.status == ManychatConnection.Status.ACTIVE and connection.consecutive_failures == 1
    deadline = time.monotonic() + 10
    while old.rotated_at is None and time.monotonic() < deadline:  # a loaded machine may lag
        time.sleep(0.05)
        old.refresh_from_db()
    assert old.rotated_at is not None  # the provider did rotate it
    assert refresh_connection(connection).outcome is Outcome.SKIPPED  # backing off, not retried blindly
    time.sleep(1.2)


def test_unreachable_provider_keeps_tokens_and_backs_off(db, user, settings):
    settings.MANYCHAT_OAUTH_TOKEN_URL = "http://127.0.0.1:9/oauth/token"  # discard port: refused
    connection = make_connection(user)
    before = stored(connection)
    result = refresh_connection(connection)
    assert result.outcome is Outcome.FAILED and result.error_code == "connection_error"
    connection.refresh_from_db()
    assert stored(connection) == before and connection.consecutive_failures == 1
    assert "ambiguous" not in connection.last_error


def test_a_success_after_failures_resets_the_backoff(sandbox, user):
    connection = make_connection(user)
    sandbox.fault("token", status=503, times=1)
    assert refresh_connection(connection).outcome is Outcome.FAILED
    assert refresh_connection(connection, force=True).outcome is Outcome.REFRESHED
    connection.refresh_from_db()
    assert connection.consecutive_failures == 0 and connection.next_attempt_at is None


# -- Backoff ----------------------------------------------------------------


@pytest.mark.parametrize("failures", range(1, 15))
def test_backoff_doubles_from_a_minute_with_jitter_and_stops_at_six_hours(failures):
    nominal = BACKOFF_BASE * 2 ** (failures - 1)
    delays = [backoff_delay(failures) for _ in range(200)]
    assert min(delays) >= min(0.8 * nominal, BACKOFF_MAX) - 1e-9
    assert max(delays) <= min(1.2 * nominal, BACKOFF_MAX)
    if 1.2 * nominal < BACKOFF_MAX:
        assert len(set(delays)) > 100  # jittered, so that rows failing together do not retry together


def test_backoff_honours_retry_after_up_to_a_day():
    assert backoff_delay(1, retry_after=900) == 900
    assert 0.8 * 60 <= backoff_delay(1, retry_after=1) <= 1.2 * 60
    assert backoff_delay(1, retry_after=10 * 86400) == 86400
    assert backoff_delay(10_000) <= BACKOFF_MAX


def test_connections_in_backoff_are_not_due_until_their_next_attempt(sandbox, user):
    now = timezone.now()
    backing_off = make_connection(user, next_attempt_at=now + dt.timedelta(minutes=5), consecutive_failures=1)
    ready = make_connection(user, next_attempt_at=now - dt.timedelta(seconds=1), consecutive_failures=1)
    assert [row.pk for row, _ in iter_due()] == [ready.pk]
    run = refresh_due_connections()
    assert run.refreshed == 1
    assert refresh_due_connections(force=True).refreshed == 2  # --all ignores backoff
    backing_off.refresh_from_db()
    assert backing_off.consecutive_failures == 0


# -- Due selection and margin -------------------------------------------------


def test_due_selection(sandbox, user, django_user_model):
    now = timezone.now()
    rows = {
        "expired": make_connection(user, expires_in=-5),
        "within margin": make_connection(user, expires_in=300),
        "fresh": make_connection(user, expires_in=3000),
        "no expiry, refreshed 2 days ago": make_connection(user, expires_in=None, refreshed_ago=2 * 86400),
        "no expiry, refreshed 2 hours ago": make_connection(user, expires_in=None, refreshed_ago=7200),
        "no expiry, never refreshed": make_connection(user, expires_in=None, refreshed_ago=None),
        "reauth": make_connection(user, expires_in=-5, status="reauth_required"),
        "disconnected": make_connection(user, expires_in=-5, status="disconnected"),
        "api key": make_connection(user, expires_in=-5, auth_type="api_key"),
        "no refresh token": make_connection(user, expires_in=-5, refresh_token=None),
    }
    due = dict(iter_due())
    reasons = {name: due_reason(row, now=now) for name, row in rows.items()}
    assert {row.pk for row in due} == {
        rows[name].pk
        for name in ("expired", "within margin", "no expiry, refreshed 2 days ago", "no expiry, never refreshed")
    }
    assert reasons["expired"] == "expired"
    assert reasons["within margin"] == "expires within the margin"
    assert reasons["no expiry, refreshed 2 days ago"].startswith("no expiry")
    assert reasons["fresh"] is None and reasons["no expiry, refreshed 2 hours ago"] is None
    assert {row.pk for row, _ in iter_due(margin=3600)} >= {rows["fresh"].pk}


def test_margin_is_capped_to_half_the_token_lifetime(sandbox, user, settings):
    settings.MANYCHAT_OAUTH_REFRESH_MARGIN = 600
    # A token that lives 120 s: with a 600 s margin it would always be due.
    young = make_connection(user, expires_in=100, refreshed_ago=20)
    old = make_connection(user, expires_in=50, refreshed_ago=70)
    assert effective_margin(young) == dt.timedelta(seconds=60)
    assert effective_margin(make_connection(user, expires_in=3000, refreshed_ago=600)) == dt.timedelta(seconds=600)
    assert [row.pk for row, _ in iter_due()] == [old.pk]
    assert refresh_connection(young).outcome is Outcome.SKIPPED
    assert refresh_connection(old).outcome is Outcome.REFRESHED


def test_short_lived_sandbox_tokens_are_not_always_due(sandbox, user, settings):
    settings.MANYCHAT_SANDBOX_TOKEN_LIFETIME = 120
    connection = make_connection(user, expires_in=-1)
    assert refresh_connection(connection).outcome is Outcome.REFRESHED
    assert list(iter_due()) == []  # 120 s lifetime, 600 s margin: capped to 60 s


# -- The lease ----------------------------------------------------------------


def test_a_connection_leased_by_another_worker_is_skipped(sandbox, user):
    connection = make_connection(user)
    ManychatConnection.objects.filter(pk=connection.pk).update(
        refresh_lease_until=timezone.now() + dt.timedelta(minutes=1), refresh_lease_owner="other"
    )
    counter = sandbox.fault("token", times=COUNTER)
    result = refresh_connection(connection)
    assert result.outcome is Outcome.SKIPPED and result.reason == LEASE_HELD
    assert token_requests_seen(counter) == 0
    connection.refresh_from_db()
    assert connection.refresh_lease_owner == "other"  # not released by us


def test_an_expired_lease_of_a_crashed_worker_is_taken_over(sandbox, user):
    connection = make_connection(user)
    ManychatConnection.objects.filter(pk=connection.pk).update(
        refresh_lease_until=timezone.now() - dt.timedelta(seconds=1), refresh_lease_owner="crashed"
    )
    assert refresh_connection(connection).outcome is Outcome.REFRESHED


def test_a_stale_instance_already_refreshed_elsewhere_is_skipped_after_claiming(sandbox, user):
    connection = make_connection(user)
    stale = ManychatConnection.objects.get(pk=connection.pk)
    assert refresh_connection(connection).outcome is Outcome.REFRESHED
    counter = sandbox.fault("token", times=COUNTER)
    assert refresh_connection(stale).outcome is Outcome.SKIPPED
    assert token_requests_seen(counter) == 0


def test_forced_runs_skip_rows_refreshed_since_they_started(sandbox, user):
    connection = make_connection(user, expires_in=86400)
    started = timezone.now()
    assert refresh_connection(connection, force=True).outcome is Outcome.REFRESHED
    result = refresh_connection(connection, force=True, not_refreshed_since=started)
    assert result.outcome is Outcome.SKIPPED


def test_tokens_refreshed_while_the_user_disconnects_are_not_stored(sandbox, user):
    from manychat_oauth.services import disconnect

    connection = make_connection(user)
    sandbox.fault("token", latency_ms=600, times=1)
    worker = threading.Thread(target=lambda: (refresh_connection(connection.pk), connections.close_all()))
    worker.start()
    wait_for_lease(connection)
    time.sleep(0.2)  # the worker is now waiting for the provider
    disconnect(ManychatConnection.objects.get(pk=connection.pk))
    worker.join()
    connection.refresh_from_db()
    assert connection.status == ManychatConnection.Status.DISCONNECTED
    assert connection.access_token is None and connection.refresh_token is None


# -- Lazy get_access_token ----------------------------------------------------


def test_get_access_token_returns_a_fresh_token_without_refreshing(sandbox, user):
    connection = make_connection(user, expires_in=3000)
    counter = sandbox.fault("token", times=COUNTER)
    assert connection.get_access_token() == stored(connection)[0]
    assert token_requests_seen(counter) == 0


def test_get_access_token_refreshes_a_due_token_first(sandbox, user):
    connection = make_connection(user, expires_in=-10)
    old = sandbox_token(connection)
    token = connection.get_access_token()
    assert token == SandboxToken.objects.get(parent=old).access_token
    assert connection.access_token == token


def test_get_access_token_waits_for_a_refresh_in_flight_elsewhere(sandbox, user):
    connection = make_connection(user, expires_in=-10)
    old = sandbox_token(connection)
    sandbox.fault("token", latency_ms=800, times=1)
    worker = threading.Thread(target=lambda: (refresh_connection(connection.pk), connections.close_all()))
    worker.start()
    wait_for_lease(connection)

    token = connection.get_access_token()  # the token is expired: it must wait, not fail

    worker.join()
    assert token == SandboxToken.objects.get(parent=old).access_token
    old.refresh_from_db()
    assert old.refresh_uses == 1  # one refresh, by the other worker
    assert SandboxToken.objects.filter(refresh_uses__gt=0).count() == 1


def test_get_access_token_gives_up_waiting_after_the_http_timeout(sandbox, user, settings):
    settings.MANYCHAT_OAUTH_HTTP_TIMEOUT = 0.2
    connection = make_connection(user, expires_in=-10)
    ManychatConnection.objects.filter(pk=connection.pk).update(
        refresh_lease_until=timezone.now() + dt.timedelta(minutes=1), refresh_lease_owner="stuck"
    )
    started = time.monotonic()
    with pytest.raises(ProviderUnavailable, match="still refreshing"):
        connection.get_access_token()
    assert 2.0 <= time.monotonic() - started < 6


def test_get_access_token_returns_the_old_token_while_still_valid_when_the_provider_fails(sandbox, user):
    connection = make_connection(user, expires_in=120)
    sandbox.fault("token", status=503, times=1)
    assert connection.get_access_token() == stored(connection)[0]
    connection.refresh_from_db()
    assert connection.consecutive_failures == 1


def test_get_access_token_raises_when_expired_and_the_provider_fails(sandbox, user):
    connection = make_connection(user, expires_in=-10)
    sandbox.fault("token", status=500, times=1)
    with pytest.raises(ProviderUnavailable) as raised:
        connection.get_access_token()
    assert connection.access_token not in str(raised.value)
    # Backing off now: no second request, same answer.
    counter = sandbox.fault("token", times=COUNTER)
    with pytest.raises(ProviderUnavailable, match="backing off"):
        connection.get_access_token()
    assert token_requests_seen(counter) == 0


def test_get_access_token_of_a_reauth_connection_raises(sandbox, user):
    connection = make_connection(user, expires_in=-10)
    SandboxToken.objects.filter(refresh_token=connection.refresh_token).update(revoked=True)
    with pytest.raises(ConnectionNotActive):
        connection.get_access_token()
    connection.refresh_from_db()
    assert connection.status == ManychatConnection.Status.REAUTH_REQUIRED


def test_get_access_token_of_an_api_key_connection_returns_the_key(db, user):
    connection = make_connection(user, auth_type="api_key", expires_in=None, refresh_token=None)
    assert connection.get_access_token() == connection.access_token


def test_results_and_messages_carry_no_secrets(sandbox, user):
    connection = make_connection(user)
    secrets_ = stored(connection)[:2]
    sandbox.fault("token", status=400, body={"error": "invalid_request", "echo": secrets_[1]}, times=1)
    result = refresh_connection(connection)
    connection.refresh_from_db()
    for text in (repr(result), connection.last_error, str(refresh.RefreshRun().as_dict())):
        for secret in secrets_:
            assert secret not in text
    assert issue_tokens().refresh_token not in repr(connection)


def test_a_row_that_cannot_be_decrypted_fails_alone_without_stalling_the_run(sandbox, user):
    from django.db import connection as db

    broken, *healthy = [make_connection(user) for _ in range(4)]
    with db.cursor() as cursor:  # as if encrypted with a key that is no longer configured
        cursor.execute(
            f"UPDATE {ManychatConnection._meta.db_table} SET refresh_token = %s WHERE id = %s",
            ["gAAAAABnot-a-token-we-can-read", broken.pk],
        )
    results = []
    run = refresh_due_connections(concurrency=1, on_result=results.append)
    assert (run.refreshed, run.failed) == (3, 1) and run.exit_code == 1
    assert [(r.connection_id, r.error_code) for r in run.problems] == [(broken.pk, "internal_error")]
    assert "gAAAA" not in repr(run.problems)
    assert len(results) == 4
    assert not ManychatConnection.objects.filter(refresh_lease_until__isnull=False).exists()
    for row in healthy:
        assert sandbox_token(row).parent is not None


def test_a_failing_progress_callback_does_not_stall_the_run(sandbox, user):
    for _ in range(3):
        make_connection(user)

    def explode(result):
        raise RuntimeError("callback bug")

    assert refresh_due_connections(concurrency=1, on_result=explode).refreshed == 3


def test_get_access_token_without_a_refresh_token_raises_once_expired(sandbox, user):
    connection = make_connection(user, expires_in=-10, refresh_token=None)
    with pytest.raises(ProviderUnavailable, match="cannot be refreshed"):
        connection.get_access_token()


class Rollback(Exception):
    pass


def test_get_access_token_inside_a_rolled_back_transaction_keeps_the_rotated_token(sandbox, user):
    from django.db import transaction

    if db_connection.vendor == "sqlite":
        pytest.skip("SQLite: an open transaction holds the write lock, so the refresh runs inside it (documented)")
    connection = make_connection(user, expires_in=-10)
    old = sandbox_token(connection)
    with pytest.raises(Rollback), transaction.atomic():
        token = connection.get_access_token()
        raise Rollback
    latest = SandboxToken.objects.get(parent=old)
    assert token == latest.access_token
    assert stored(connection)[:2] == (latest.access_token, latest.refresh_token)


def test_get_access_token_inside_a_transaction_that_locked_the_row_refreshes_within_it(sandbox, user):
    from django.db import transaction

    if db_connection.vendor == "sqlite":
        pytest.skip("SQLite: the sandbox shares the database file and would wait for this transaction's lock")
    connection = make_connection(user, expires_in=-10)
    old = sandbox_token(connection)
    with transaction.atomic():
        locked = ManychatConnection.objects.select_for_update().get(pk=connection.pk)
        token = locked.get_access_token()
    assert token == SandboxToken.objects.get(parent=old).access_token == stored(connection)[0]


@pytest.mark.django_db(transaction=False)
def test_get_access_token_on_a_row_not_yet_committed_refreshes_in_the_callers_transaction(user, settings):
    settings.MANYCHAT_OAUTH_TOKEN_URL = "http://127.0.0.1:9/oauth/token"  # refused at once
    connection = make_connection(user, expires_in=-10)  # inside the test's transaction
    started = time.monotonic()
    with pytest.raises(ProviderUnavailable, match="connection_error"):
        connection.get_access_token()
    assert time.monotonic() - started < 2  # no waiting on a lease nobody holds
    connection.refresh_from_db()
    assert connection.consecutive_failures == 1 and connection.last_error.startswith("connection_error")
