"""Hostile input to every view: never a 500, never an open redirect, never another user's data.

Property-based (hypothesis) over the callback's query string, the connect and
disconnect POSTs, ``next``, the API-key form and the App install endpoint. Each example builds its own logged-in ``Client``
and changes no shared state, so the function-scoped fixtures (user, database,
sandbox) are safe to share between examples.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from django.core.cache import cache
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
    for url in (
        "/manychat/connect/",
        f"/manychat/connections/{connection.pk}/disconnect/",
        "/manychat/api-key/",
        "/manychat/app/key/",
    ):
        assert browser.post(url, {**data, "api_key": "1:abc", "app_key": "abc"}, **extra).status_code == 403
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
    ("get", "/manychat/api-key/"),
    ("post", "/manychat/api-key/"),
    ("get", "/manychat/app/key/"),
    ("post", "/manychat/app/key/"),
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
        ("put", "/manychat/api-key/"),
        ("delete", "/manychat/app/key/"),
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


# -- the API-key form ---------------------------------------------------------------

well_shaped_key = st.builds(
    lambda page, secret: f"{page}:{secret}",
    st.text("0123456789", min_size=1, max_size=34),
    st.text("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789", min_size=1, max_size=210),
)
api_key_values = st.one_of(
    well_shaped_key,
    st.text(max_size=300),
    st.sampled_from(["", " ", "1:", ":abc", "1:abc\n", "１２３:abc", "1:abc:def", "1: abc", "<script>", "%00"]),
)


@FEW
@given(
    keys=st.lists(api_key_values, max_size=3),
    extra=st.dictionaries(st.text(max_size=12), st.text(max_size=40), max_size=3),
    next_url=urlish,
)
@example(keys=["1:" + "a" * 200], extra={}, next_url="//evil.example")
@example(keys=["1" * 33 + ":a"], extra={}, next_url="")
@example(keys=["1:a", "2:b"], extra={"api_key[]": "x"}, next_url="")
def test_any_api_key_post_gives_a_clear_page_and_saves_nothing(sandbox, user, keys, extra, next_url):
    cache.clear()  # the per-user attempt limit would otherwise answer most examples
    data: dict[str, Any] = {**extra, "api_key": keys, "next": next_url}
    response = logged_in(user).post("/manychat/api-key/", data)
    assert response.status_code in (400, 429), response.status_code
    assert b"Page API key" in response.content
    for key in keys:
        if len(key.strip()) >= 8:
            assert escape(key.strip()).encode() not in response.content
    assert not ManychatConnection.objects.exists()


# -- the App install endpoint ----------------------------------------------------------

INSTALL_SECRET = "install-secret-hostile-5e8a21"
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=12,
)
install_fields = st.fixed_dictionaries(
    {},
    optional={
        "app_token": st.one_of(st.text(max_size=60), json_values, st.just("{{app_token}}")),
        "link_code": st.one_of(st.text(max_size=20), json_values, st.just("[[link_code]]")),
        "page_id": st.one_of(st.text(max_size=70), st.integers(), json_values),
        "app_id": st.one_of(st.text(max_size=70), json_values),
        "app_version": st.one_of(st.text(max_size=40), json_values),
    },
)
install_bodies = st.one_of(
    install_fields.map(lambda d: json.dumps(d).encode()),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.binary(max_size=200),
    st.text(max_size=200).map(lambda t: t.encode("utf-8", "surrogatepass")),
)
header_text = st.text(st.characters(min_codepoint=32, max_codepoint=255), max_size=80)


@FUZZ
@given(
    body=install_bodies,
    secret=st.one_of(st.just(INSTALL_SECRET), st.none(), header_text),
    token_header=st.one_of(st.none(), header_text),
    content_type=st.sampled_from(["application/json", "text/plain", "application/x-www-form-urlencoded", ""]),
    use_real_code=st.booleans(),
)
@example(
    body=b"[" * 5000 + b"]" * 5000,
    secret=INSTALL_SECRET,
    token_header=None,
    content_type="application/json",
    use_real_code=False,
)
@example(
    body=b'{"app_token": "x", "link_code": "ABCD-EFGH"}',
    secret=INSTALL_SECRET,
    token_header="y",
    content_type="application/json",
    use_real_code=False,
)
@example(
    body=b"\xff\xfe{}", secret=INSTALL_SECRET, token_header=None, content_type="application/json", use_real_code=False
)
def test_any_install_request_gets_a_json_error_never_a_500(
    sandbox, user, settings, body, secret, token_header, content_type, use_real_code
):
    from manychat_oauth.app_install import issue_link_code

    settings.MANYCHAT_OAUTH_APP_INSTALL_SECRET = INSTALL_SECRET
    if use_real_code:
        code = issue_link_code(user).code
        payload = json.loads(body) if body.startswith(b"{") and _is_json(body) else {}
        if isinstance(payload, dict):
            body = json.dumps({**payload, "link_code": code}).encode()
    headers = {}
    if secret is not None:
        headers["X-Install-Secret"] = secret
    if token_header is not None:
        headers["X-App-Token"] = token_header
    response = Client(raise_request_exception=False).post(
        "/manychat/app/install/", body, content_type=content_type, headers=headers
    )
    assert 400 <= response.status_code < 500 or response.status_code in (502, 503), response.status_code
    assert response["Content-Type"] == "application/json"
    answer = json.loads(response.content)
    assert answer["status"] == "error" and isinstance(answer["message"], str) and answer["message"]
    assert not ManychatConnection.objects.exists()


def _is_json(body: bytes) -> bool:
    try:
        json.loads(body)
    except ValueError:
        return False
    return True


@pytest.mark.parametrize("method", ["get", "put", "delete", "patch"])
def test_the_install_endpoint_answers_other_methods_with_a_json_405(db, method):
    response = getattr(Client(), method)("/manychat/app/install/")
    assert response.status_code == 405 and response["Allow"] == "POST"
    assert json.loads(response.content)["status"] == "error"


def test_the_app_key_form_shares_the_per_user_attempt_limit_with_the_api_key_form(sandbox, user):
    from manychat_oauth.views import API_KEY_ATTEMPTS

    cache.clear()
    browser = logged_in(user)
    statuses = [browser.post("/manychat/api-key/", {"api_key": "1:nope"}).status_code for _ in range(API_KEY_ATTEMPTS)]
    assert set(statuses) == {400}
    response = browser.post("/manychat/app/key/", {"app_key": "unknown-app-key-" + "z" * 20})
    assert response.status_code == 429
    assert b"Too many attempts" in response.content and b"zzzz" not in response.content
    cache.clear()
    assert browser.post("/manychat/app/key/", {"app_key": "unknown-app-key-" + "z" * 20}).status_code == 400
