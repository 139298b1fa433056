"""Hostile input to every view: never a 500, never an open redirect, never another user's data.

Property-based (hypothesis) over the callback's query string, the connect and
disconnect POSTs and ``next``. Each example builds its own logged-in ``Client``
and changes no shared state, so the function-scoped fixtures (user, database,
sandbox) are safe to share between examples.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from django.test import Client
from django.utils.encoding import iri_to_uri
from django.utils.html import escape
from django.utils.http import url_has_allowed_host_and_scheme
from hypothesis import HealthCheck, example, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from manychat_oauth.models import ManychatConnection
from manychat_oauth.views import SESSION_KEY

FUZZ = hypothesis_settings(
    max_examples=60,
    deadline=None,
    database=None,
    # The fixtures are created once per test; no example changes them (see module docstring).
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
FEW = hypothesis_settings(FUZZ, max_examples=25)

HOSTILE_NEXT = [
    "//evil.example",
    "///evil.example",
    "https://evil.example",
    "https://evil.example/manychat/connections/",
    "http:evil.example",
    "https:/evil.example",
    "//testserver@evil.example",
    "https://testserver.evil.example/",
    "\\\\evil.example",
    "/\\evil.example",
    "\\/evil.example",
    " //evil.example",
    "\t//evil.example",
    "//evil.example%2f..",
    "javascript:alert(1)",
    "JaVaScRiPt:alert(document.cookie)",
    " javascript:alert(1)",
    "java\nscript:alert(1)",
    "data:text/html,<script>alert(1)</script>",
    "vbscript:msgbox(1)",
    "mailto:someone@evil.example",
    "ftp://evil.example/",
    "evil.example",
    "relative/path",
    "http://testserver/absolute/",
]
CALLBACK_KEYS = ["state", "code", "error", "error_description", "error_uri", "next", "scope"]
urlish = st.one_of(
    st.sampled_from(HOSTILE_NEXT),
    st.text(max_size=60),
    st.builds(lambda a, b: a + b, st.sampled_from(["/", "//", "\\", "http://", "https://", "javascript:"]), st.text()),
)


def logged_in(user: Any, *, csrf: bool = False) -> Client:
    browser = Client(enforce_csrf_checks=csrf, raise_request_exception=False)
    browser.force_login(user)
    return browser


def is_local(location: str) -> bool:
    """A redirect a browser would keep on this site."""
    return (
        location.startswith("/")
        and not location.startswith(("//", "/\\"))
        and url_has_allowed_host_and_scheme(location, allowed_hosts={"testserver"})
    )


def pending_state(browser: Client, next_url: str | None = None) -> str:
    response = browser.post("/manychat/connect/", {"next": next_url} if next_url is not None else {})
    assert response.status_code == 302
    return parse_qs(urlsplit(response["Location"]).query)["state"][0]


# -- the callback's query string -------------------------------------------------


@pytest.mark.django_db
@FUZZ
@given(raw=st.text(max_size=300))
@example(raw="state=&code=")
@example(raw="state=" + "s" * 201)
@example(raw="%ff%fe=%00&state=%E0%A4%A")
@example(raw="state=a&state=b&code=c&code=d")
def test_any_raw_query_string_on_the_callback_gives_a_4xx_page(user, raw):
    response = logged_in(user).get("/manychat/callback/?" + raw)
    assert response.status_code == 400
    assert b"Try again" in response.content
    assert not ManychatConnection.objects.exists()


@FUZZ
@given(
    params=st.dictionaries(
        st.sampled_from(CALLBACK_KEYS) | st.text(max_size=10),
        st.text(max_size=200) | st.sampled_from(HOSTILE_NEXT) | st.just("access_denied"),
        max_size=6,
    ),
    real_state=st.booleans(),
    long_code=st.booleans(),
)
@example(params={"code": "x"}, real_state=True, long_code=True)
@example(params={"error": "access_denied"}, real_state=True, long_code=False)
@example(params={"error": "server_error\r\nFAKE LOG LINE"}, real_state=True, long_code=False)
@example(params={"code": "forged"}, real_state=True, long_code=False)
def test_fuzzed_callbacks_with_a_real_pending_flow_never_500_or_connect(sandbox, user, params, real_state, long_code):
    browser = logged_in(user)
    query = dict(params)
    if real_state:
        query["state"] = pending_state(browser)
    if long_code and "code" in query:
        query["code"] = "c" * 2049
    response = browser.get("/manychat/callback/", query)
    assert response.status_code in (200, 400)  # the denied page, or a "try again" page
    assert not ManychatConnection.objects.exists()


def test_a_state_is_refused_after_its_flow_expired_even_with_hostile_extras(user, settings):
    browser = logged_in(user)
    state = pending_state(browser)
    settings.MANYCHAT_OAUTH_STATE_MAX_AGE = -1
    response = browser.get("/manychat/callback/", {"state": state, "code": "x", "next": "//evil.example"})
    assert response.status_code == 400 and b"expired" in response.content


def test_a_corrupted_session_flow_gives_a_4xx_page(user):
    browser = logged_in(user)
    state = pending_state(browser)
    session = browser.session
    session[SESSION_KEY] = {state: "not a dict"}
    session.save()
    assert browser.get("/manychat/callback/", {"state": state, "code": "x"}).status_code == 400


# -- next --------------------------------------------------------------------


@pytest.mark.django_db
@FUZZ
@given(next_url=urlish)
def test_connect_keeps_only_a_local_next(user, next_url):
    browser = logged_in(user)
    state = pending_state(browser, next_url)
    kept = browser.session[SESSION_KEY][state]["next"]
    assert kept is None or is_local(kept)
    page = browser.get("/manychat/connect/", {"next": next_url})
    assert page.status_code == 200
    if kept:  # rendered escaped into the form, never as raw HTML
        assert f'name="next" value="{escape(kept)}"'.encode() in page.content
    else:
        assert b'name="next"' not in page.content


@FEW
@given(next_url=urlish)
@example(next_url="//evil.example")
@example(next_url="https://evil.example")
@example(next_url="javascript:alert(1)")
@example(next_url="/\\evil.example")
@example(next_url="/after/connect/?tab=1")
def test_after_connecting_the_redirect_never_leaves_the_site(sandbox, user, next_url):
    browser = logged_in(user)
    response = browser.post("/manychat/connect/", {"next": next_url})
    query = sandbox.consent(response["Location"])
    answer = browser.get("/manychat/callback/", query)
    assert answer.status_code == 302
    location = answer["Location"]
    assert is_local(location)
    assert location in (iri_to_uri(next_url), "/manychat/connections/")


@pytest.mark.parametrize("hostile", HOSTILE_NEXT)
def test_hostile_next_values_are_dropped(user, hostile):
    browser = logged_in(user)
    state = pending_state(browser, hostile)
    assert browser.session[SESSION_KEY][state]["next"] is None


def test_http_next_is_dropped_on_an_https_site(user):
    browser = logged_in(user)
    response = browser.post("/manychat/connect/", {"next": "/x/"}, secure=True)
    state = parse_qs(urlsplit(response["Location"]).query)["state"][0]
    assert browser.session[SESSION_KEY][state]["next"] == "/x/"
    response = browser.post("/manychat/connect/", {"next": "http://testserver/x/"}, secure=True)
    state = parse_qs(urlsplit(response["Location"]).query)["state"][0]
    assert browser.session[SESSION_KEY][state]["next"] is None


# -- connect and disconnect POSTs ------------------------------------------


@pytest.mark.django_db
@FUZZ
@given(form=st.dictionaries(st.text(max_size=20), st.text(max_size=100), max_size=5))
def test_any_connect_post_starts_a_flow_or_fails_cleanly(user, form):
    response = logged_in(user).post("/manychat/connect/", form)
    assert response.status_code == 302
    assert response["Location"].startswith("https://manychat.com/oauth/authorize?")


@pytest.mark.django_db
@FUZZ
@given(pk=st.integers(min_value=0, max_value=10**40), form=st.dictionaries(st.text(max_size=10), st.text(max_size=50)))
@example(pk=2**63, form={})
@example(pk=2**63 - 1, form={})
def test_disconnecting_any_id_but_your_own_gives_404(user, other_user, pk, form):
    theirs = ManychatConnection.objects.get_or_create(
        user=other_user, page_id="theirs", defaults={"access_token": "their-token"}
    )[0]
    target = theirs.pk if pk % 3 == 0 else pk
    response = logged_in(user).post(f"/manychat/connections/{target}/disconnect/", form)
    assert response.status_code == 404
    theirs.refresh_from_db()
    assert (theirs.status, theirs.access_token) == ("active", "their-token")


@pytest.mark.django_db
@FUZZ
@given(path=st.text(max_size=40))
@example(path="-1")
@example(path="1.5")
@example(path="１")  # a full-width digit
def test_malformed_connection_ids_never_reach_the_view(user, path):
    own_connection(user) if not ManychatConnection.objects.exists() else None
    response = logged_in(user).post(f"/manychat/connections/{path}/disconnect/")
    assert response.status_code in (404, 405)  # no route, or another view that only takes GET
    assert ManychatConnection.objects.get().status == "active"


# -- CSRF, login and methods ------------------------------------------------


def own_connection(user: Any) -> ManychatConnection:
    return ManychatConnection.objects.create(user=user, page_id="mine", access_token="my-token")


@pytest.mark.django_db
@FUZZ
@given(token=st.text(max_size=80), header=st.booleans())
def test_every_post_needs_a_valid_csrf_token(user, token, header):
    connection = own_connection(user) if not ManychatConnection.objects.exists() else ManychatConnection.objects.get()
    browser = logged_in(user, csrf=True)
    browser.get("/manychat/connect/")  # sets the CSRF cookie, like a real browser
    extra = {"HTTP_X_CSRFTOKEN": token} if header else {}
    data = {} if header else {"csrfmiddlewaretoken": token}
    for url in ("/manychat/connect/", f"/manychat/connections/{connection.pk}/disconnect/"):
        assert browser.post(url, data, **extra).status_code == 403
    connection.refresh_from_db()
    assert connection.status == "active"


def test_posts_with_the_right_csrf_token_go_through(user):
    connection = own_connection(user)
    browser = logged_in(user, csrf=True)
    browser.get("/manychat/connect/")
    token = browser.cookies["csrftoken"].value
    assert browser.post("/manychat/connect/", {"csrfmiddlewaretoken": token}).status_code == 302
    url = f"/manychat/connections/{connection.pk}/disconnect/"
    assert browser.post(url, {"csrfmiddlewaretoken": token}).status_code == 302


VIEWS = [
    ("get", "/manychat/connect/"),
    ("post", "/manychat/connect/"),
    ("get", "/manychat/callback/?state=s&code=c"),
    ("get", "/manychat/connections/"),
    ("post", "/manychat/connections/1/disconnect/"),
]


@pytest.mark.parametrize(("method", "url"), VIEWS)
def test_every_view_needs_login(db, method, url):
    response = getattr(Client(raise_request_exception=False), method)(url)
    assert response.status_code == 302
    location = urlsplit(response["Location"])
    assert location.path == "/accounts/login/"
    assert parse_qs(location.query)["next"] == [url]
    assert not ManychatConnection.objects.exists()


@pytest.mark.parametrize(
    ("method", "url"),
    [
        ("put", "/manychat/connect/"),
        ("delete", "/manychat/connect/"),
        ("post", "/manychat/callback/"),
        ("post", "/manychat/connections/"),
        ("get", "/manychat/connections/1/disconnect/"),
        ("patch", "/manychat/connections/1/disconnect/"),
    ],
)
def test_wrong_methods_give_405(user, method, url):
    assert getattr(logged_in(user), method)(url).status_code == 405


def test_a_hostile_error_parameter_cannot_forge_log_lines(user, all_logs):
    browser = logged_in(user)
    state = pending_state(browser)
    browser.get("/manychat/callback/", {"state": state, "error": "server_error\r\nCRITICAL forged line"})
    [record] = [r for r in all_logs.records if "Authorization server answered" in r.getMessage()]
    assert "\n" not in record.getMessage() and "\r" not in record.getMessage()
