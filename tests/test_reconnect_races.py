"""Work started with an old credential never overwrites, or condemns, a newer one.

A refresh or a health check can take seconds; meanwhile the user may connect
the page again (OAuth, API key or App install) or disconnect it.
"""

from __future__ import annotations

import threading
import time

import pytest

from manychat_oauth import health, refresh, services
from manychat_oauth.models import ManychatConnection
from manychat_oauth.refresh import Outcome
from manychat_oauth.sandbox.accounts import create_api_key, create_page, revoke_api_keys
from manychat_oauth.signals import tokens_refreshed

from .tokens import make_connection


def refresh_in_background(pk: int) -> tuple[threading.Thread, list[refresh.RefreshResult]]:
    results: list[refresh.RefreshResult] = []
    thread = threading.Thread(target=lambda: results.append(refresh.refresh_connection(pk)))
    thread.start()
    return thread, results


def test_refresh_finishing_after_the_user_connected_a_key_keeps_the_key(sandbox, user):
    connection = make_connection(user, page_id="1000001")
    # The sandbox rotates the token at once, then answers 1.5 s later.
    sandbox.fault("token", latency_ms=1500, latency_after=True, times=1)
    thread, results = refresh_in_background(connection.pk)
    time.sleep(0.5)
    services.save_connection(
        user, auth_type="api_key", access_token="1000001:newkey", page={"page_id": "1000001", "page_name": "Shop"}
    )
    thread.join(10)
    [result] = results
    assert result.outcome is Outcome.SKIPPED
    connection.refresh_from_db()
    assert (connection.auth_type, connection.access_token, connection.status) == ("api_key", "1000001:newkey", "active")
    assert connection.refresh_token is None and connection.expires_at is None


def test_refresh_finishing_after_a_disconnect_leaves_the_connection_empty(sandbox, user):
    connection = make_connection(user)
    sandbox.fault("token", latency_ms=1500, latency_after=True, times=1)
    thread, results = refresh_in_background(connection.pk)
    time.sleep(0.5)
    services.disconnect(ManychatConnection.objects.get(pk=connection.pk))
    thread.join(10)
    assert results[0].outcome is Outcome.SKIPPED
    connection.refresh_from_db()
    assert connection.status == "disconnected"
    assert connection.access_token is None and connection.refresh_token is None


def test_refused_refresh_after_a_reconnect_does_not_mark_the_new_connection(sandbox, user):
    connection = make_connection(user, page_id="1000001")
    sandbox.fault("token", status=400, body={"error": "invalid_grant"}, latency_ms=1500, times=1)
    thread, results = refresh_in_background(connection.pk)
    time.sleep(0.5)
    services.save_connection(
        user, auth_type="oauth", access_token="fresh", refresh_token="fresh-rt", page={"page_id": "1000001"}
    )
    thread.join(10)
    assert results[0].outcome is Outcome.SKIPPED
    connection.refresh_from_db()
    assert connection.status == "active" and connection.refresh_token == "fresh-rt"


def test_health_check_with_the_old_key_does_not_condemn_the_new_one(sandbox, user):
    page = create_page("Swapped Keys")
    old_key = create_api_key(page).key
    connection, _ = services.save_connection(
        user, auth_type="api_key", access_token=old_key, page={"page_id": page.page_id, "page_name": page.name}
    )
    stale = ManychatConnection.objects.get(pk=connection.pk)  # a check reads the row...
    revoke_api_keys(page)
    new_key = create_api_key(page).key
    services.save_connection(user, auth_type="api_key", access_token=new_key, page={"page_id": page.page_id})
    result = health.check_connection(stale)  # ...and gets 401 for the old key
    assert not result.ok
    connection.refresh_from_db()
    assert connection.status == "active" and connection.access_token == new_key


def test_health_check_fills_a_missing_page_id_unless_the_user_has_that_page_already(sandbox, user):
    existing = make_connection(user, page_id="1000001", expires_in=3600)
    pageless = make_connection(user, expires_in=3600)
    ManychatConnection.objects.filter(pk=pageless.pk).update(page_id="")  # getInfo failed at connect time
    pageless.refresh_from_db()
    assert health.check_connection(pageless).ok
    pageless.refresh_from_db()
    assert pageless.page_id == "" and pageless.page_name == "Sandbox Coffee Shop"
    existing.delete()
    assert health.check_connection(pageless).ok
    pageless.refresh_from_db()
    assert pageless.page_id == "1000001"


def test_a_failing_tokens_refreshed_receiver_does_not_undo_the_refresh(sandbox, user, caplog):
    connection = make_connection(user)

    def broken_receiver(**kwargs):
        raise RuntimeError("site bug")

    tokens_refreshed.connect(broken_receiver, dispatch_uid="t-broken")
    try:
        result = refresh.refresh_connection(connection.pk)
    finally:
        tokens_refreshed.disconnect(dispatch_uid="t-broken")
    assert result.outcome is Outcome.REFRESHED
    assert any("tokens_refreshed receiver" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("body", ["not json", '{"token_type": "Bearer"}'])
def test_unusable_2xx_refresh_answer_is_recorded_as_ambiguous(sandbox, user, body):
    connection = make_connection(user)
    sandbox.fault("token", status=200, body=body, times=1)
    assert refresh.refresh_connection(connection.pk).outcome is Outcome.FAILED
    connection.refresh_from_db()
    assert "ambiguous" in connection.last_error
    assert connection.status == "active"
