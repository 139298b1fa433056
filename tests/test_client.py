"""Unit tests of client.py: HTTP is faked only at the session boundary (``http`` fixture),
except for a few real sockets that check how real ``requests`` failures are classified."""

from __future__ import annotations

import base64
import datetime as dt
import email.utils
import http.client
import socket
import threading
from urllib.parse import parse_qs, quote, urlsplit

import pytest
import requests
from django.utils import timezone
from urllib3.exceptions import MaxRetryError, NewConnectionError, ProtocolError

from manychat_oauth import client
from manychat_oauth.exceptions import (
    InvalidClient,
    InvalidGrant,
    InvalidTokenResponse,
    OAuthError,
    ProviderUnavailable,
)

SECRET = "test-client-secret-5f2b9c"  # tests/settings.py
CODE = "code-3a9f1c-never-shown"
VERIFIER = "verifier-" + "v" * 60
REFRESH = "rt-8e1d42-never-shown"
BODY_MARKER = "BODY-7c3e-never-shown"


def query_of(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


def exchange() -> client.TokenResponse:
    return client.exchange_code(CODE, redirect_uri="https://site.example/cb/", code_verifier=VERIFIER)


def tokens(**extra):
    return {"access_token": "at-1", "token_type": "bearer", "expires_in": 3600, **extra}


# -- authorize URL, state, PKCE ---------------------------------------------


def test_authorize_url_carries_the_rfc_6749_and_7636_parameters(settings):
    settings.MANYCHAT_OAUTH_SCOPES = ["page:read", "subscribers:write"]
    url = client.build_authorize_url(redirect_uri="https://site.example/cb/?x=1 2", state="st", code_verifier="v" * 43)
    assert url.startswith("https://manychat.com/oauth/authorize?")
    assert query_of(url) == {
        "response_type": "code",
        "client_id": "test-client",
        "redirect_uri": "https://site.example/cb/?x=1 2",
        "state": "st",
        "scope": "page:read subscribers:write",
        "code_challenge": client.code_challenge("v" * 43),
        "code_challenge_method": "S256",
    }
    assert "%20" in url and "+" not in url  # spaces percent-encoded, as RFC 3986 wants


def test_authorize_url_without_pkce_or_scopes_and_with_a_query_in_the_endpoint(settings):
    settings.MANYCHAT_OAUTH_AUTHORIZE_URL = "https://auth.example/authorize?tenant=7"
    url = client.build_authorize_url(redirect_uri="https://site.example/cb/", state="st", code_verifier=None)
    assert url.startswith("https://auth.example/authorize?tenant=7&response_type=code")
    assert not {"scope", "code_challenge", "code_challenge_method"} & set(query_of(url))


def test_code_challenge_matches_rfc_7636_appendix_b():
    assert client.code_challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk") == (
        "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
    )


def test_state_and_verifier_are_long_random_and_url_safe():
    states = {client.new_state() for _ in range(50)}
    verifiers = {client.new_code_verifier() for _ in range(50)}
    assert len(states) == len(verifiers) == 50
    assert all(len(s) == 43 for s in states)
    # RFC 7636 4.1: 43 to 128 characters of [A-Za-z0-9-._~].
    allowed = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
    assert all(len(v) == 86 and set(v) <= allowed for v in verifiers)


def test_one_session_per_thread_with_our_user_agent():
    mine = client.get_session()
    assert client.get_session() is mine
    assert mine.headers["User-Agent"].startswith("django-manychat-oauth/")
    theirs = []
    thread = threading.Thread(target=lambda: theirs.append(client.get_session()))
    thread.start()
    thread.join()
    assert theirs[0] is not mine


# -- requests as sent ---------------------------------------------------------


def test_code_exchange_posts_the_form_with_client_secret_post(http, settings):
    settings.MANYCHAT_OAUTH_HTTP_TIMEOUT = 7
    http.answer(json=tokens())
    exchange()
    sent = http.last
    assert (sent.prepared.method, sent.prepared.url) == ("POST", "https://manychat.com/oauth/token")
    assert sent.form == {
        "grant_type": "authorization_code",
        "code": CODE,
        "redirect_uri": "https://site.example/cb/",
        "code_verifier": VERIFIER,
        "client_id": "test-client",
        "client_secret": SECRET,
    }
    assert "Authorization" not in sent.headers
    assert sent.headers["Accept"] == "application/json"
    assert sent.timeout == 7.0


def test_code_exchange_without_pkce_sends_no_verifier(http):
    http.answer(json=tokens())
    client.exchange_code(CODE, redirect_uri="https://site.example/cb/", code_verifier=None)
    assert "code_verifier" not in http.last.form


def test_client_secret_basic_form_encodes_id_and_secret_before_base64(http, settings):
    settings.MANYCHAT_OAUTH_TOKEN_AUTH_METHOD = "client_secret_basic"
    settings.MANYCHAT_OAUTH_CLIENT_ID = "app id:1/ü"
    settings.MANYCHAT_OAUTH_CLIENT_SECRET = "s3cr:t+&=%/"
    http.answer(json=tokens())
    exchange()
    header = http.last.headers["Authorization"]
    assert header.startswith("Basic ")
    user, _, password = base64.b64decode(header[6:]).decode().partition(":")
    assert (user, password) == (quote("app id:1/ü", safe=""), quote("s3cr:t+&=%/", safe=""))
    assert ":" not in user  # the separator stays unambiguous
    assert "client_secret" not in http.last.form and "client_id" not in http.last.form


def test_refresh_sends_the_refresh_token_and_the_configured_scopes(http, settings):
    settings.MANYCHAT_OAUTH_SCOPES = ["a", "b"]
    http.answer(json=tokens(refresh_token="rt-2"))
    result = client.refresh_access_token(REFRESH)
    assert http.last.form["grant_type"] == "refresh_token"
    assert http.last.form["refresh_token"] == REFRESH
    assert http.last.form["scope"] == "a b"
    assert result.refresh_token == "rt-2"


def test_refresh_without_scopes_sends_no_scope(http):
    http.answer(json=tokens())
    client.refresh_access_token(REFRESH)
    assert "scope" not in http.last.form


# -- successful answers -------------------------------------------------------


@pytest.mark.parametrize("returned", [{}, {"refresh_token": ""}, {"refresh_token": None}, {"refresh_token": 5}])
def test_refresh_keeps_the_old_refresh_token_when_none_is_returned(http, returned):
    http.answer(json=tokens(**returned))
    assert client.refresh_access_token(REFRESH).refresh_token == REFRESH


def test_code_exchange_without_refresh_token_gives_none(http):
    http.answer(json=tokens())
    assert exchange().refresh_token is None


def test_expires_at_is_received_at_plus_expires_in(http):
    http.answer(json=tokens(expires_in=3600))
    before = timezone.now()
    result = exchange()
    assert before <= result.received_at <= timezone.now()
    assert result.expires_in == 3600
    assert result.expires_at == result.received_at + dt.timedelta(seconds=3600)


@pytest.mark.parametrize(
    ("expires_in", "expected"),
    [("1800", 1800), (0, 0), (None, None), (True, None), (False, None), (-5, None), ("soon", None), ([1], None)],
)
def test_expires_in_is_an_int_or_none(http, expires_in, expected):
    http.answer(json=tokens(expires_in=expires_in))
    result = exchange()
    assert result.expires_in == expected
    assert (result.expires_at is None) == (expected is None)


@pytest.mark.parametrize(
    ("scope", "expected"), [("a b", "a b"), (["a", "b"], "a b"), (None, ""), (7, ""), ({"a": 1}, "")]
)
def test_scope_is_normalised_to_a_space_separated_string(http, scope, expected):
    http.answer(json=tokens(scope=scope))
    assert exchange().scope == expected


def test_token_type_defaults_to_bearer(http):
    http.answer(json={"access_token": "at"})
    assert exchange().token_type == "Bearer"


def test_token_response_repr_hides_both_tokens(http):
    http.answer(json=tokens(refresh_token="rt-secret-2"))
    text = repr(exchange())
    assert "at-1" not in text and "rt-secret-2" not in text
    assert "token_type='bearer'" in text


# -- failures: network ------------------------------------------------------


def refused() -> requests.ConnectionError:
    reason = NewConnectionError(None, "Failed to establish a new connection: [Errno 111] Connection refused")
    return requests.ConnectionError(MaxRetryError(None, "/oauth/token", reason=reason))


def refused_by_cause() -> requests.ConnectionError:
    try:
        try:
            raise ConnectionRefusedError(111, "Connection refused")
        except ConnectionRefusedError as inner:
            raise requests.ConnectionError("wrapped") from inner
    except requests.ConnectionError as exc:
        return exc


def dropped() -> requests.ConnectionError:
    return requests.ConnectionError(
        ProtocolError("Connection aborted.", http.client.RemoteDisconnected("Remote end closed connection"))
    )


NETWORK_FAILURES = [
    (requests.ConnectTimeout("connect timed out"), "connect_timeout", False, "Timed out connecting"),
    (requests.ReadTimeout("read timed out"), "read_timeout", True, "may have been processed"),
    (refused(), "connection_error", False, "Could not reach"),
    (refused_by_cause(), "connection_error", False, "Could not reach"),
    (dropped(), "connection_error", True, "connection to the token endpoint"),
    (requests.TooManyRedirects("redirect loop"), "request_error", False, "TooManyRedirects"),
]


@pytest.mark.parametrize(
    ("exc", "code", "ambiguous", "phrase"),
    NETWORK_FAILURES,
    ids=["connect-timeout", "read-timeout", "refused", "refused-by-cause", "dropped", "other"],
)
def test_network_failures_become_provider_unavailable(http, exc, code, ambiguous, phrase):
    http.fail(exc)
    with pytest.raises(ProviderUnavailable) as excinfo:
        client.refresh_access_token(REFRESH)
    error = excinfo.value
    assert (error.code, error.ambiguous, error.retry_after) == (code, ambiguous, None)
    assert phrase in str(error)
    assert error.__cause__ is None and error.__suppress_context__  # no chained request details
    assert_clean(error)


# Real sockets: the same classification against what requests actually raises.


def test_a_real_refused_connection_is_not_ambiguous(settings):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    settings.MANYCHAT_OAUTH_TOKEN_URL = f"http://127.0.0.1:{port}/oauth/token"
    with pytest.raises(ProviderUnavailable) as excinfo:
        client.refresh_access_token(REFRESH)
    assert (excinfo.value.code, excinfo.value.ambiguous) == ("connection_error", False)


def test_a_real_read_timeout_is_ambiguous(settings):
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)  # the kernel accepts the connection; nobody ever answers
        settings.MANYCHAT_OAUTH_TOKEN_URL = f"http://127.0.0.1:{server.getsockname()[1]}/oauth/token"
        settings.MANYCHAT_OAUTH_HTTP_TIMEOUT = 0.3
        with pytest.raises(ProviderUnavailable) as excinfo:
            client.refresh_access_token(REFRESH)
    assert (excinfo.value.code, excinfo.value.ambiguous) == ("read_timeout", True)


def test_a_real_connection_dropped_after_sending_is_ambiguous(settings):
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)

        def accept_read_and_hang_up() -> None:
            conn, _ = server.accept()
            conn.recv(65536)
            conn.close()

        thread = threading.Thread(target=accept_read_and_hang_up)
        thread.start()
        settings.MANYCHAT_OAUTH_TOKEN_URL = f"http://127.0.0.1:{server.getsockname()[1]}/oauth/token"
        with pytest.raises(ProviderUnavailable) as excinfo:
            client.refresh_access_token(REFRESH)
        thread.join()
    assert (excinfo.value.code, excinfo.value.ambiguous) == ("connection_error", True)


# -- failures: HTTP answers -----------------------------------------------


def http_date(delta: dt.timedelta) -> str:
    return email.utils.format_datetime(timezone.now() + delta, usegmt=True)


@pytest.mark.parametrize(
    ("status", "body", "content_type", "headers", "code", "retry_after"),
    [
        (500, '{"error": "server_error"}', "application/json", {}, "http_500", None),
        (502, f"<html><body>Bad gateway {BODY_MARKER}</body></html>", "text/html", {}, "http_502", None),
        (503, "", "text/plain", {"Retry-After": "garbage"}, "http_503", None),
        (429, "{}", "application/json", {"Retry-After": "120"}, "http_429", 120.0),
        (429, "{}", "application/json", {"Retry-After": " 5 "}, "http_429", 5.0),
        (429, "{}", "application/json", {}, "http_429", None),
    ],
    ids=["500", "502-html", "503-bad-retry-after", "429-seconds", "429-padded", "429-no-retry-after"],
)
def test_5xx_and_429_are_transient_with_retry_after(http, status, body, content_type, headers, code, retry_after):
    http.answer(status, body=body, content_type=content_type, headers=headers)
    with pytest.raises(ProviderUnavailable) as excinfo:
        client.refresh_access_token(REFRESH)
    error = excinfo.value
    assert (error.code, error.retry_after, error.ambiguous) == (code, retry_after, False)
    assert f"HTTP {status}" in str(error)
    assert_clean(error)


def test_retry_after_as_an_http_date_gives_the_seconds_until_then(http):
    http.answer(429, json={}, headers={"Retry-After": http_date(dt.timedelta(seconds=90))})
    with pytest.raises(ProviderUnavailable) as excinfo:
        client.refresh_access_token(REFRESH)
    assert 85 <= excinfo.value.retry_after <= 90


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, None),
        ("", None),
        ("0", 0.0),
        ("3", 3.0),
        ("-3", None),
        ("1.5", None),
        ("Wed, 21 Oct 2015 07:28:00 GMT", 0.0),  # in the past
        ("Wed, 21 Oct 2015 07:28:00 -0000", 0.0),  # naive date (no zone), in the past
        ("not a date", None),
    ],
)
def test_parse_retry_after(value, expected):
    assert client.parse_retry_after(value) == expected


def test_retry_after_http_date_without_zone_is_read_as_utc():
    future = (timezone.now() + dt.timedelta(seconds=60)).strftime("%a, %d %b %Y %H:%M:%S -0000")
    assert 55 <= client.parse_retry_after(future) <= 60


@pytest.mark.parametrize(
    ("status", "payload", "exc_type", "code"),
    [
        (400, {"error": "invalid_grant", "error_description": BODY_MARKER}, InvalidGrant, "invalid_grant"),
        (401, {"error": "invalid_client", "error_description": BODY_MARKER}, InvalidClient, "invalid_client"),
        (400, {"error": "unauthorized_client"}, InvalidClient, "unauthorized_client"),
        (401, None, InvalidClient, "invalid_client"),
        (400, {"error": "invalid_scope", "error_description": BODY_MARKER}, OAuthError, "invalid_scope"),
        (400, {"error": "é" * 3}, OAuthError, "http_400"),
        (400, {"error": "x" * 65}, OAuthError, "http_400"),
        (400, {"error": 42}, OAuthError, "http_400"),
        (403, ["not", "an", "object"], OAuthError, "http_403"),
        (400, None, OAuthError, "http_400"),
    ],
    ids=[
        "invalid_grant",
        "invalid_client",
        "unauthorized_client",
        "401-no-json",
        "unknown-error",
        "non-ascii-error",
        "overlong-error",
        "non-string-error",
        "json-list",
        "400-no-json",
    ],
)
def test_oauth_errors_are_classified_by_their_error_code(http, status, payload, exc_type, code):
    if payload is None:
        http.answer(status, body=f"<html>{BODY_MARKER}</html>", content_type="text/html")
    else:
        http.answer(status, json=payload)
    with pytest.raises(OAuthError) as excinfo:
        client.refresh_access_token(REFRESH)
    error = excinfo.value
    assert type(error) is exc_type
    assert error.code == code
    assert f"HTTP {status}" in str(error) and "refresh_token" in str(error)
    assert_clean(error)


def test_an_unknown_error_code_is_named_in_the_message(http):
    http.answer(400, json={"error": "invalid_scope"})
    with pytest.raises(OAuthError, match="HTTP 400 invalid_scope for authorization_code"):
        exchange()


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (f"<html>{BODY_MARKER}</html>", "text/html"),
        (f"access_token={BODY_MARKER}", "application/x-www-form-urlencoded"),
        ('["at-1"]', "application/json"),
        ("null", "application/json"),
    ],
    ids=["html", "form-encoded", "json-list", "json-null"],
)
def test_a_200_that_is_not_a_json_object_is_an_invalid_token_response(http, body, content_type):
    http.answer(200, body=body, content_type=content_type)
    with pytest.raises(InvalidTokenResponse, match="not a JSON object") as excinfo:
        exchange()
    assert_clean(excinfo.value)


@pytest.mark.parametrize(
    "payload",
    [{"token_type": "Bearer"}, {"access_token": ""}, {"access_token": 12345}, {"access_token": None}],
)
def test_a_200_without_a_usable_access_token_is_an_invalid_token_response(http, payload):
    http.answer(200, json={**payload, "refresh_token": BODY_MARKER})
    with pytest.raises(InvalidTokenResponse, match="no access_token") as excinfo:
        exchange()
    assert_clean(excinfo.value)


def assert_clean(error: BaseException) -> None:
    """Neither the body nor any secret we sent is in the message, args or repr."""
    for text in (str(error), repr(error), repr(error.args)):
        for secret in (BODY_MARKER, SECRET, CODE, VERIFIER, REFRESH):
            assert secret not in text


@pytest.mark.parametrize(
    ("error", "code"),
    [
        ("invalid_request", "invalid_request"),
        ("Invalid_Grant", "http_400"),  # not the shape of a registered code
        ("rtlowercase0secret1", "http_400"),  # the refresh token we sent
        ("lowercase0", "http_400"),  # a piece of it
        ("test", "http_400"),  # a piece of the client secret
    ],
)
def test_an_error_code_that_repeats_what_we_sent_is_not_repeated(http, error, code):
    http.answer(400, json={"error": error})
    with pytest.raises(OAuthError) as excinfo:
        client.refresh_access_token("rtlowercase0secret1")
    assert excinfo.value.code == code
    if code == "http_400":
        assert error not in str(excinfo.value)


def test_reading_the_body_within_the_deadline_keeps_the_connection_for_the_next_call():
    """``send()`` streams the body to bound its time, and still returns the connection to the pool."""
    import http.server
    import threading

    seen: set[tuple[str, int]] = set()

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            seen.add(self.client_address)
            body = b'{"ok": true}'
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/"
        answers = [client.send("GET", url, what="test server").json() for _ in range(3)]
    finally:
        server.shutdown()
        server.server_close()
    assert answers == [{"ok": True}] * 3
    assert len(seen) == 1
