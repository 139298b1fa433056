"""The connections admin: health at a glance, actions, permissions, and no secret on any page."""

from __future__ import annotations

import datetime as dt
import itertools

import pytest
from django.contrib.admin.models import LogEntry
from django.contrib.auth.models import Permission
from django.contrib.messages import get_messages
from django.db import connection as db_connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from manychat_oauth.admin import MAX_ROWS_PER_NETWORK_ACTION, Health, health_counts, relative
from manychat_oauth.models import ManychatConnection
from manychat_oauth.sandbox.models import SandboxApiKey, SandboxPage, SandboxToken
from manychat_oauth.signals import connection_disconnected, reauth_required

from .conftest import start_flow

CHANGELIST = "/admin/manychat_oauth/manychatconnection/"
_page_ids = itertools.count(5_000_000)


def change_url(pk: int) -> str:
    return f"{CHANGELIST}{pk}/change/"


def build(user, state: Health, *, auth_type: str = "oauth", **fields) -> ManychatConnection:
    """An unsaved connection in ``state`` (with distinctive, findable tokens)."""
    now = timezone.now()
    n = next(_page_ids)
    values = {
        "user": user,
        "auth_type": auth_type,
        "page_id": str(n),
        "page_name": f"Page {n}",
        "access_token": f"plain-access-{n}-{state.slug}",
        "refresh_token": f"plain-refresh-{n}-{state.slug}" if auth_type == "oauth" else None,
        "expires_at": now + dt.timedelta(minutes=50) if auth_type == "oauth" else None,
        "last_refreshed_at": now - dt.timedelta(minutes=10) if auth_type == "oauth" else None,
    }
    if state is Health.EXPIRING:
        values["expires_at"] = now + dt.timedelta(minutes=5)
    elif state is Health.EXPIRED:
        values["expires_at"] = now - dt.timedelta(hours=3, minutes=5)
    elif state is Health.BACKOFF:
        values.update(
            consecutive_failures=2,
            next_attempt_at=now + dt.timedelta(minutes=4),
            last_error="http_503: The authorization server answered HTTP 503 Service Unavailable, try later.",
        )
    elif state is Health.REAUTH:
        values.update(status="reauth_required", last_error="invalid_grant: the user must connect again.")
    elif state is Health.DISCONNECTED:
        values.update(status="disconnected", access_token=None, refresh_token=None, expires_at=None)
    values.update(fields)
    return ManychatConnection(**values)


def make(user, state: Health, **fields) -> ManychatConnection:
    connection = build(user, state, **fields)
    connection.save()
    return connection


def make_mixed(users, count: int) -> list[ManychatConnection]:
    """``count`` connections cycling through every state and auth type."""
    kinds = [(state, "oauth") for state in Health] + [(Health.HEALTHY, "api_key"), (Health.REAUTH, "app")]
    rows = [
        build(users[i % len(users)], kinds[i % len(kinds)][0], auth_type=kinds[i % len(kinds)][1]) for i in range(count)
    ]
    return ManychatConnection.objects.bulk_create(rows)


def one_of_each(user) -> dict[Health, ManychatConnection]:
    return {state: make(user, state) for state in Health}


def shown(response) -> list[int]:
    return [row.pk for row in response.context["cl"].result_list]


def texts(response) -> list[str]:
    return [str(m) for m in get_messages(response.wsgi_request)]


def run_action(client: Client, action: str, connections, **extra):
    data = {"action": action, "_selected_action": [c.pk for c in connections], "index": 0, **extra}
    return client.post(CHANGELIST, data, follow=True)


def raw_token_columns() -> list[str]:
    """The ciphertexts as stored, read straight from the table."""
    with db_connection.cursor() as cursor:
        cursor.execute("SELECT access_token, refresh_token FROM manychat_oauth_manychatconnection")
        return [value for row in cursor.fetchall() for value in row if value]


@pytest.fixture
def staff(django_user_model):
    def make_staff(*codenames: str) -> Client:
        member = django_user_model.objects.create_user(f"staff-{'-'.join(codenames)}", password="pw", is_staff=True)
        member.user_permissions.set(Permission.objects.filter(codename__in=codenames))
        client = Client()
        client.force_login(member)
        return client

    return make_staff


# -- Secrets ---------------------------------------------------------------


def test_no_page_shows_a_token_in_plaintext_or_ciphertext(admin_client, user):
    rows = [*one_of_each(user).values(), make(user, Health.HEALTHY, auth_type="api_key")]
    secrets = [s for c in rows for s in (c.access_token, c.refresh_token) if s]
    ciphertexts = raw_token_columns()
    assert len(ciphertexts) == len(secrets) > 0
    needles = secrets + ciphertexts + [c[20:60] for c in ciphertexts]
    pages = [CHANGELIST, f"{CHANGELIST}?q=Page", f"{CHANGELIST}?health=healthy"]
    for row in rows:
        pages += [change_url(row.pk), f"{CHANGELIST}{row.pk}/delete/", f"{CHANGELIST}{row.pk}/history/"]
    for url in pages:
        response = admin_client.get(url)
        assert response.status_code == 200, url
        content = response.content.decode()
        for needle in needles:
            assert needle not in content, url


def test_change_page_says_whether_tokens_are_set_without_showing_them(admin_client, user):
    oauth = make(user, Health.HEALTHY)
    api_key = make(user, Health.HEALTHY, auth_type="api_key")
    disconnected = make(user, Health.DISCONNECTED)
    assert admin_client.get(change_url(oauth.pk)).content.decode().count("set (encrypted)") == 2
    key_page = admin_client.get(change_url(api_key.pk)).content.decode()
    assert key_page.count("set (encrypted)") == 1 and key_page.count("not set") == 1
    assert admin_client.get(change_url(disconnected.pk)).content.decode().count("not set") == 2


def test_changelist_does_not_load_token_columns(admin_client, user):
    make_mixed([user], 12)
    with CaptureQueriesContext(db_connection) as queries:
        admin_client.get(CHANGELIST)
    rows_query = next(q["sql"] for q in queries if "ORDER BY" in q["sql"] and "manychat_oauth" in q["sql"])
    select_list = rows_query.split(" FROM ")[0]
    assert '"access_token" IS NOT NULL' in select_list.replace("`", '"')
    assert '."access_token",' not in select_list and '."refresh_token",' not in select_list


# -- Changelist --------------------------------------------------------------


def test_changelist_query_count_is_the_same_at_10_and_1000_rows(admin_client, django_user_model):
    users = [django_user_model.objects.create_user(f"u{i}", f"u{i}@example.com") for i in range(20)]
    make_mixed(users, 10)
    with CaptureQueriesContext(db_connection) as small:
        assert len(shown(admin_client.get(CHANGELIST))) == 10
    make_mixed(users, 990)
    with CaptureQueriesContext(db_connection) as large:
        response = admin_client.get(CHANGELIST)
    assert len(shown(response)) == 100
    assert len(large) == len(small), [q["sql"] for q in large]
    for url in (f"{CHANGELIST}?health=backoff", f"{CHANGELIST}?q=u1", f"{CHANGELIST}?o=-6.1"):
        with CaptureQueriesContext(db_connection) as filtered:
            assert admin_client.get(url).status_code == 200
        assert len(filtered) <= len(small) + 1, url  # + the unfiltered total


def test_changelist_orders_the_most_urgent_first(admin_client, user):
    rows = one_of_each(user)
    later_expired = make(user, Health.EXPIRED, expires_at=timezone.now() - dt.timedelta(minutes=1))
    order = shown(admin_client.get(CHANGELIST))
    expected = [
        rows[Health.REAUTH].pk,
        rows[Health.EXPIRED].pk,  # expired 3 h ago before expired 1 min ago
        later_expired.pk,
        rows[Health.BACKOFF].pk,
        rows[Health.EXPIRING].pk,
        rows[Health.HEALTHY].pk,
        rows[Health.DISCONNECTED].pk,
    ]
    assert order == expected


def test_changelist_row_shows_badge_text_relative_expiry_failures_and_short_error(admin_client, user):
    make(user, Health.EXPIRING, expires_at=timezone.now() + dt.timedelta(minutes=12, seconds=30))
    make(user, Health.EXPIRED)
    make(user, Health.BACKOFF)
    content = admin_client.get(CHANGELIST).content.decode()
    for state in (Health.EXPIRING, Health.EXPIRED, Health.BACKOFF):
        assert f"</span>&nbsp;{state.label}</span>" in content  # the badge reads without colour
    assert "in 12 min" in content
    assert "expired 3 h ago" in content
    error = "http_503: The authorization server answered HTTP 503 Service Unavailable, try later."
    assert f'title="{error}">http_503: The authorization server answered HTTP 503 Servic…</span>' in content
    assert '<td class="field-failures">2</td>' in content
    assert "10 min ago" in content  # last refreshed
    backoff = ManychatConnection.objects.get(last_error=error)
    assert f"{backoff.page_name}<br>" in content and f"{backoff.page_id} · OAuth</span>" in content  # one cell
    assert ">Refreshed</a>" in content and "field-auth_type" not in content


def test_summary_counts_every_state_in_one_query(admin_client, django_user_model):
    user = django_user_model.objects.create_user("carol", "carol@example.com")
    make_mixed([user], 64)  # 8 kinds: 16 healthy (8 OAuth + 8 API key), 16 needing re-auth, 8 of the others
    with CaptureQueriesContext(db_connection) as queries:
        counts = health_counts(ManychatConnection.objects.all())
    assert len(queries) == 1
    assert counts == {
        Health.REAUTH: 16,
        Health.EXPIRED: 8,
        Health.BACKOFF: 8,
        Health.EXPIRING: 8,
        Health.HEALTHY: 16,
        Health.DISCONNECTED: 8,
    }
    content = admin_client.get(CHANGELIST).content.decode()
    assert 'href="?health=reauth"' in content and '<span class="count">16</span>' in content


@pytest.mark.parametrize("state", list(Health), ids=lambda s: s.slug)
def test_health_filter_selects_exactly_the_rows_in_that_state(admin_client, user, state):
    rows = one_of_each(user)
    make(user, Health.HEALTHY, auth_type="api_key")  # no expiry: healthy
    response = admin_client.get(CHANGELIST, {"health": state.slug})
    expected = {rows[state].pk} | (
        set(ManychatConnection.objects.filter(auth_type="api_key").values_list("pk", flat=True))
        if state is Health.HEALTHY
        else set()
    )
    assert set(shown(response)) == expected


def test_health_filter_counts_facets_without_error(admin_client, user):
    one_of_each(user)
    response = admin_client.get(CHANGELIST, {"_facets": "True"})
    assert response.status_code == 200
    assert "Expiring soon (1)" in response.content.decode()


def test_status_and_auth_type_filters(admin_client, user):
    rows = one_of_each(user)
    key = make(user, Health.HEALTHY, auth_type="api_key")
    assert shown(admin_client.get(CHANGELIST, {"status": "reauth_required"})) == [rows[Health.REAUTH].pk]
    assert shown(admin_client.get(CHANGELIST, {"status": "disconnected"})) == [rows[Health.DISCONNECTED].pk]
    assert shown(admin_client.get(CHANGELIST, {"auth_type": "api_key"})) == [key.pk]


def test_search_by_username_email_page_name_and_page_id(admin_client, user, other_user):
    alice = make(user, Health.HEALTHY, page_name="Alice Bakery", page_id="7770001")
    bob = make(other_user, Health.HEALTHY, page_name="Bob Garage", page_id="8880002")
    for query, expected in [("alice", alice), ("bob@example.com", bob), ("Garage", bob), ("7770001", alice)]:
        assert shown(admin_client.get(CHANGELIST, {"q": query})) == [expected.pk], query


def test_every_sortable_column_sorts_without_error(admin_client, user):
    one_of_each(user)
    for index in range(1, 9):
        for direction in ("", "-"):
            assert admin_client.get(CHANGELIST, {"o": f"{direction}{index}"}).status_code == 200


@pytest.mark.parametrize(
    ("offset", "text"),
    [
        (dt.timedelta(minutes=12, seconds=5), "in 12 min"),
        (-dt.timedelta(hours=3, minutes=1), "3 h ago"),
        (dt.timedelta(seconds=42), "in 42 s"),
        (dt.timedelta(days=3, hours=1), "in 3 d"),
        (-dt.timedelta(hours=47), "47 h ago"),
        (-dt.timedelta(milliseconds=300), "0 s ago"),
    ],
)
def test_relative_time_is_compact(offset, text):
    now = timezone.now()
    assert relative(now + offset, now) == text


def test_user_supplied_text_is_escaped(admin_client, user):
    row = make(
        user, Health.BACKOFF, page_name="<script>alert(1)</script>", last_error="<img src=x onerror=alert(1)>" * 3
    )
    for url in (CHANGELIST, change_url(row.pk)):
        content = admin_client.get(url).content.decode()
        assert "<script>alert(1)" not in content and "<img src=x" not in content
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in content


def test_display_helpers_work_on_rows_not_loaded_through_the_admin(user):
    from django.contrib.admin import site

    model_admin = site._registry[ManychatConnection]
    row = ManychatConnection.objects.get(pk=make(user, Health.EXPIRED, refresh_token=None).pk)
    assert "Expired" in model_admin.health_badge(row)
    assert model_admin.access_token_state(row) == "set (encrypted)"
    assert model_admin.refresh_token_state(row) == "not set"


# -- Change page, add, delete ----------------------------------------------


def test_change_page_is_read_only_with_a_health_panel(admin_client, user):
    row = make(user, Health.BACKOFF)
    response = admin_client.get(change_url(row.pk))
    content = response.content.decode()
    assert 'name="_save"' not in content
    assert "Health" in content and "http_503: The authorization server answered HTTP 503" in content
    assert "Next attempt" in content and "in 3 min" in content  # 4 min minus a few ms
    response = admin_client.post(change_url(row.pk), {"page_name": "Changed", "status": "active"})
    assert response.status_code == 403
    row.refresh_from_db()
    assert row.page_name != "Changed"


def test_connections_cannot_be_added_from_the_admin(admin_client):
    assert admin_client.get(f"{CHANGELIST}add/").status_code == 403
    assert f"{CHANGELIST}add/" not in admin_client.get(CHANGELIST).content.decode()


def test_delete_asks_for_confirmation_first(admin_client, user):
    row = make(user, Health.HEALTHY)
    page = admin_client.get(f"{CHANGELIST}{row.pk}/delete/")
    assert b"Are you sure" in page.content
    assert ManychatConnection.objects.filter(pk=row.pk).exists()
    admin_client.post(f"{CHANGELIST}{row.pk}/delete/", {"post": "yes"})
    assert not ManychatConnection.objects.filter(pk=row.pk).exists()


# -- Actions -----------------------------------------------------------------


def connect_through_sandbox(sandbox, user) -> ManychatConnection:
    browser = Client()
    browser.force_login(user)
    query = sandbox.consent(start_flow(browser))
    assert browser.get("/manychat/callback/", query).status_code == 302
    return ManychatConnection.objects.get(user=user, auth_type="oauth")


def test_refresh_action_refreshes_through_the_sandbox(sandbox, admin_client, user):
    connection = connect_through_sandbox(sandbox, user)
    old_access, old_refresh = connection.access_token, connection.refresh_token
    key = make(user, Health.HEALTHY, auth_type="api_key")
    response = run_action(admin_client, "refresh_tokens_now", [connection, key])
    assert texts(response) == [
        "Refresh tokens now: 1 refreshed; 1 connection not refreshable "
        "(API key, App install, inactive or without a refresh token)."
    ]
    connection.refresh_from_db()
    assert connection.access_token != old_access and connection.refresh_token != old_refresh
    assert SandboxToken.objects.get(refresh_token=old_refresh).rotated_at is not None
    assert SandboxToken.objects.filter(access_token=connection.access_token).exists()


def test_refresh_action_reports_a_provider_failure_and_keeps_tokens(sandbox, admin_client, user):
    connection = connect_through_sandbox(sandbox, user)
    before = (connection.access_token, connection.refresh_token)
    sandbox.fault("token", status=503, times=1)
    response = run_action(admin_client, "refresh_tokens_now", [connection])
    [message] = texts(response)
    assert message.startswith("Refresh tokens now: 0 refreshed; 1 failed (http_503")
    connection.refresh_from_db()
    assert (connection.access_token, connection.refresh_token) == before
    assert connection.consecutive_failures == 1 and connection.next_attempt_at is not None
    history = admin_client.get(f"{CHANGELIST}{connection.pk}/history/").content.decode()
    assert "Refresh tokens now: failed (http_503)." in history


def test_refresh_action_reports_revoked_tokens_as_needing_reauth(sandbox, admin_client, user):
    connection = connect_through_sandbox(sandbox, user)
    SandboxToken.objects.update(revoked=True)
    events = []
    reauth_required.connect(lambda **kw: events.append(kw["connection"].pk), weak=False, dispatch_uid="t-admin-ra")
    try:
        response = run_action(admin_client, "refresh_tokens_now", [connection])
    finally:
        reauth_required.disconnect(dispatch_uid="t-admin-ra")
    assert texts(response) == ["Refresh tokens now: 0 refreshed; 1 now need re-authorization."]
    connection.refresh_from_db()
    assert connection.status == "reauth_required" and events == [connection.pk]


def test_refresh_action_stops_and_says_so_when_the_client_credentials_are_refused(
    sandbox, admin_client, user, settings
):
    first = connect_through_sandbox(sandbox, user)
    second = make(user, Health.EXPIRING)
    settings.MANYCHAT_SANDBOX_CLIENT_SECRET = "not-what-we-send"
    messages_shown = texts(run_action(admin_client, "refresh_tokens_now", [first, second]))
    assert messages_shown[0] == (
        "Refresh stopped: the provider refused the client credentials (invalid_client). "
        "Check MANYCHAT_OAUTH_CLIENT_ID and MANYCHAT_OAUTH_CLIENT_SECRET."
    )
    assert messages_shown[1].startswith("Refresh tokens now: 0 refreshed")
    assert SandboxToken.objects.filter(refresh_uses__gt=0).count() == 0  # the sandbox refused before looking
    for row in (first, second):
        row.refresh_from_db()
        assert row.status == "active" and row.consecutive_failures == 0


def test_check_action_works_for_an_oauth_connection(sandbox, admin_client, user):
    connection = connect_through_sandbox(sandbox, user)
    [message] = texts(run_action(admin_client, "check_connections", [connection]))
    assert message == "Check connection: 1 working."
    connection.refresh_from_db()
    assert connection.last_checked_at is not None and connection.page_name == "Sandbox Coffee Shop"


def test_refresh_action_leaves_a_connection_another_worker_is_refreshing(sandbox, admin_client, user):
    connection = connect_through_sandbox(sandbox, user)
    lease_until = timezone.now() + dt.timedelta(minutes=1)
    ManychatConnection.objects.filter(pk=connection.pk).update(
        refresh_lease_until=lease_until, refresh_lease_owner="w2"
    )
    assert "yes, lease ends in" in admin_client.get(change_url(connection.pk)).content.decode()
    [message] = texts(run_action(admin_client, "refresh_tokens_now", [connection]))
    assert message == (
        "Refresh tokens now: 0 refreshed; 1 skipped (another worker was refreshing it, or it changed meanwhile)."
    )
    assert SandboxToken.objects.filter(refresh_uses__gt=0).count() == 0
    connection.refresh_from_db()
    assert connection.refresh_lease_owner == "w2"


def test_network_actions_refuse_large_selections(admin_client, user):
    rows = make_mixed([user], MAX_ROWS_PER_NETWORK_ACTION * 2)
    healthy = [r for r in rows if r.status == "active"]
    assert len(healthy) > MAX_ROWS_PER_NETWORK_ACTION
    before = {r.pk: r.updated_at for r in ManychatConnection.objects.all()}
    for action in ("refresh_tokens_now", "check_connections"):
        [message] = texts(run_action(admin_client, action, healthy))
        assert f"at most {MAX_ROWS_PER_NETWORK_ACTION} at a time" in message
    assert {r.pk: r.updated_at for r in ManychatConnection.objects.all()} == before


def test_check_action_reads_get_info_and_marks_refused_keys(sandbox, admin_client, user, other_user):
    page = SandboxPage.objects.create(page_id="424242", name="Checked Page", category="Bakery")
    SandboxApiKey.objects.create(page=page, key="424242:goodkey")
    SandboxApiKey.objects.create(page=page, key="424242:revokedkey", revoked_at=timezone.now())
    good = make(
        user, Health.HEALTHY, auth_type="api_key", access_token="424242:goodkey", page_id="424242", page_name=""
    )
    revoked = make(other_user, Health.HEALTHY, auth_type="api_key", access_token="424242:revokedkey")
    gone = make(user, Health.DISCONNECTED)
    response = run_action(admin_client, "check_connections", [good, revoked, gone])
    assert texts(response) == [
        "Check connection: 1 working; 1 refused by Manychat, now need re-authorization; 1 skipped (not active)."
    ]
    good.refresh_from_db()
    revoked.refresh_from_db()
    assert good.page_name == "Checked Page" and good.last_checked_at is not None
    assert revoked.status == "reauth_required"


def test_check_action_reports_an_unavailable_provider(sandbox, admin_client, user):
    page = SandboxPage.objects.create(page_id="515151", name="Flaky")
    SandboxApiKey.objects.create(page=page, key="515151:key")
    row = make(user, Health.HEALTHY, auth_type="api_key", access_token="515151:key")
    sandbox.fault("getinfo", status=503, times=1)
    [message] = texts(run_action(admin_client, "check_connections", [row]))
    assert message == "Check connection: 0 working; 1 could not be checked (http_503)."
    row.refresh_from_db()
    assert row.status == "active" and row.last_error.startswith("http_503")


def test_mark_action_marks_active_rows_and_sends_the_signal(admin_client, user):
    rows = one_of_each(user)
    events = []
    reauth_required.connect(lambda **kw: events.append(kw["connection"].pk), weak=False, dispatch_uid="t-admin-mk")
    try:
        response = run_action(admin_client, "mark_reauth_required", rows.values())
    finally:
        reauth_required.disconnect(dispatch_uid="t-admin-mk")
    active = [rows[s].pk for s in (Health.EXPIRED, Health.BACKOFF, Health.EXPIRING, Health.HEALTHY)]
    assert sorted(events) == sorted(active)
    assert texts(response) == [
        "Marked 4 connections as needing re-authorization; 2 skipped (already needing re-auth or disconnected)."
    ]
    assert set(ManychatConnection.objects.filter(status="reauth_required").values_list("pk", flat=True)) == {
        *active,
        rows[Health.REAUTH].pk,
    }
    assert ManychatConnection.objects.get(pk=rows[Health.DISCONNECTED].pk).status == "disconnected"
    assert ManychatConnection.objects.get(pk=active[0]).last_error.startswith("Marked as needing re-authorization")
    assert LogEntry.objects.filter(
        object_id=str(active[0]), change_message="Marked as needing re-authorization."
    ).exists()


def test_disconnect_action_confirms_then_forgets_tokens(admin_client, user):
    rows = [make(user, Health.HEALTHY), make(user, Health.REAUTH)]
    confirm = run_action(admin_client, "disconnect_connections", rows)
    assert b"Disconnect 2 connections?" in confirm.content
    assert ManychatConnection.objects.filter(status="disconnected").count() == 0
    events = []
    connection_disconnected.connect(lambda **kw: events.append(kw), weak=False, dispatch_uid="t-admin-dc")
    try:
        done = run_action(admin_client, "disconnect_connections", rows, confirmed="yes")
    finally:
        connection_disconnected.disconnect(dispatch_uid="t-admin-dc")
    assert texts(done) == ["Disconnected 2 connections; their tokens were forgotten."]
    assert len(events) == 2
    for row in ManychatConnection.objects.all():
        assert row.status == "disconnected" and row.access_token is None and row.refresh_token is None


def test_disconnect_confirmation_page_shows_no_token(admin_client, user):
    row = make(user, Health.HEALTHY)
    content = run_action(admin_client, "disconnect_connections", [row]).content.decode()
    for needle in [row.access_token, row.refresh_token, *raw_token_columns()]:
        assert needle not in content


# -- Permissions -------------------------------------------------------------


def test_view_only_staff_can_look_but_not_act(staff, user):
    client = staff("view_manychatconnection")
    row = make(user, Health.HEALTHY)
    listing = client.get(CHANGELIST)
    assert listing.status_code == 200 and shown(listing) == [row.pk]
    for action in ("refresh_tokens_now", "check_connections", "mark_reauth_required", "disconnect_connections"):
        assert f'value="{action}"'.encode() not in listing.content
        run_action(client, action, [row], confirmed="yes")
        row.refresh_from_db()
        assert row.status == "active" and row.access_token, action
    assert client.get(change_url(row.pk)).status_code == 200
    assert client.get(f"{CHANGELIST}{row.pk}/delete/").status_code == 403


def test_staff_with_change_permission_can_run_actions(staff, user):
    client = staff("view_manychatconnection", "change_manychatconnection")
    row = make(user, Health.HEALTHY)
    listing = client.get(CHANGELIST)
    assert b'value="mark_reauth_required"' in listing.content
    assert b'value="delete_selected"' not in listing.content
    run_action(client, "mark_reauth_required", [row])
    row.refresh_from_db()
    assert row.status == "reauth_required"


def test_staff_without_any_permission_sees_nothing(staff, user):
    make(user, Health.HEALTHY)
    assert staff("view_user").get(CHANGELIST).status_code == 403
