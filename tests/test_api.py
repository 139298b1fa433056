"""Unit tests of api.py's envelope handling; HTTP faked only at the session (``http`` fixture)."""

from __future__ import annotations

import pytest
import requests

from manychat_oauth import api
from manychat_oauth.exceptions import ManychatAPIError, ManychatAuthError, ProviderUnavailable

KEY = "1234567:abcDEF0123456789secretkey"
INFO = {"id": 1000001, "name": "Coffee", "category": "Cafe", "avatar_link": "https://x.example/a.png"}


def assert_clean(error: BaseException) -> None:
    for text in (str(error), repr(error), repr(error.args)):
        assert KEY not in text
        assert "BODY-MARKER" not in text


def test_call_sends_the_bearer_credential_to_the_joined_url(http, settings):
    settings.MANYCHAT_OAUTH_API_BASE_URL = "https://api.example/"
    settings.MANYCHAT_OAUTH_HTTP_TIMEOUT = 3
    http.answer(json={"status": "success", "data": INFO})
    assert api.call("GET", "/fb/page/getInfo", KEY) == INFO
    sent = http.last
    assert (sent.prepared.method, sent.prepared.url) == ("GET", "https://api.example/fb/page/getInfo")
    assert sent.headers["Authorization"] == f"Bearer {KEY}"
    assert sent.headers["Accept"] == "application/json"
    assert sent.timeout == 3.0


def test_call_merges_extra_headers_and_passes_other_arguments(http):
    http.answer(json={"status": "success", "data": {"ok": 1}})
    api.call("POST", "fb/sending/sendContent", KEY, headers={"X-Trace": "t1"}, json={"a": 1})
    assert http.last.headers["X-Trace"] == "t1"
    assert http.last.headers["Authorization"] == f"Bearer {KEY}"
    assert http.last.prepared.body == b'{"a": 1}'
    assert http.last.prepared.url == "https://api.manychat.com/fb/sending/sendContent"


def test_call_accepts_headers_none(http):
    http.answer(json={"status": "success", "data": None})
    assert api.call("GET", "x", KEY, headers=None) is None


@pytest.mark.parametrize(
    ("status", "payload", "exc_type", "code", "api_message"),
    [
        (401, {"status": "error", "message": "Wrong token"}, ManychatAuthError, "unauthorized", "Wrong token"),
        (401, None, ManychatAuthError, "unauthorized", ""),
        (400, {"status": "error", "message": "Permission denied"}, ManychatAPIError, "api_error", "Permission denied"),
        (200, {"status": "error", "message": "Validation error"}, ManychatAPIError, "api_error", "Validation error"),
        (404, None, ManychatAPIError, "api_error", ""),
        (404, {"status": "success", "data": {}}, ManychatAPIError, "api_error", ""),
        (200, None, ManychatAPIError, "invalid_response", ""),
        (200, {"data": INFO}, ManychatAPIError, "invalid_response", ""),
        (200, ["status", "success"], ManychatAPIError, "invalid_response", ""),
        (400, {"status": "error", "message": 42}, ManychatAPIError, "api_error", ""),
    ],
    ids=[
        "401-wrong-token",
        "401-html",
        "400-error",
        "200-error",
        "404-html",
        "404-success-envelope",
        "200-not-json",
        "200-no-status",
        "200-json-list",
        "non-string-message",
    ],
)
def test_the_envelope_status_decides_and_errors_carry_manychats_message(
    http, status, payload, exc_type, code, api_message
):
    if payload is None:
        http.answer(status, body="<html>BODY-MARKER</html>", content_type="text/html")
    else:
        http.answer(status, json=payload)
    with pytest.raises(ManychatAPIError) as excinfo:
        api.call("GET", "/fb/page/getInfo", KEY)
    error = excinfo.value
    assert type(error) is exc_type
    assert (error.code, error.status_code, error.api_message) == (code, status, api_message)
    assert f"HTTP {status}" in str(error) and "(/fb/page/getInfo)" in str(error)
    assert_clean(error)


def test_manychats_message_is_cut_to_200_characters(http):
    http.answer(400, json={"status": "error", "message": "m" * 500})
    with pytest.raises(ManychatAPIError) as excinfo:
        api.call("GET", "x", KEY)
    assert excinfo.value.api_message == "m" * 200


@pytest.mark.parametrize(
    ("status", "payload", "headers", "code", "retry_after"),
    [
        (500, {"status": "exception", "message": "Something went wrong"}, {}, "api_exception", None),
        (500, {"status": "error"}, {}, "http_500", None),
        (502, None, {}, "http_502", None),
        (503, None, {"Retry-After": "30"}, "http_503", 30.0),
        (429, {"status": "error", "message": "Too many requests"}, {"Retry-After": "2"}, "http_429", 2.0),
        (429, {"status": "error"}, {}, "http_429", None),
    ],
    ids=["uninstalled-app-500", "500", "502-html", "503-retry-after", "429-retry-after", "429"],
)
def test_5xx_and_429_are_transient(http, status, payload, headers, code, retry_after):
    if payload is None:
        http.answer(status, body="<html>BODY-MARKER</html>", content_type="text/html", headers=headers)
    else:
        http.answer(status, json=payload, headers=headers)
    with pytest.raises(ProviderUnavailable) as excinfo:
        api.call("GET", "/fb/page/getInfo", KEY)
    assert (excinfo.value.code, excinfo.value.retry_after) == (code, retry_after)
    assert_clean(excinfo.value)


def test_network_failures_name_the_path_without_its_query(http):
    http.fail(requests.ReadTimeout("read timed out"))
    with pytest.raises(ProviderUnavailable) as excinfo:
        api.call("GET", f"/fb/subscriber/findBySystemField?email=a@b.example&key={KEY}", KEY)
    assert "(/fb/subscriber/findBySystemField)" in str(excinfo.value)
    assert excinfo.value.ambiguous
    assert "a@b.example" not in str(excinfo.value)
    assert_clean(excinfo.value)


def test_get_page_info_returns_the_page(http):
    http.answer(json={"status": "success", "data": INFO})
    assert api.get_page_info(KEY) == INFO
    assert http.last.prepared.url == "https://api.manychat.com/fb/page/getInfo"


@pytest.mark.parametrize("data", [None, [], {}, {"id": ""}, {"name": "no id"}])
def test_get_page_info_without_a_page_id_is_an_invalid_response(http, data):
    http.answer(json={"status": "success", "data": data})
    with pytest.raises(ManychatAPIError) as excinfo:
        api.get_page_info(KEY)
    assert excinfo.value.code == "invalid_response"


def test_page_fields_maps_get_info_onto_the_model():
    info = {**INFO, "username": "coffee", "timezone": "Europe/Paris", "is_pro": True}
    assert api.page_fields(info) == {
        "page_id": "1000001",
        "page_name": "Coffee",
        "page_username": "coffee",
        "page_category": "Cafe",
        "page_avatar_url": "https://x.example/a.png",
        "page_timezone": "Europe/Paris",
        "page_is_pro": True,
    }


def test_page_fields_cuts_long_values_and_tolerates_missing_or_odd_ones():
    fields = api.page_fields({"id": "9" * 100, "name": "n" * 300, "is_pro": "yes", "username": None})
    assert fields["page_id"] == "9" * 64
    assert fields["page_name"] == "n" * 255
    assert fields["page_is_pro"] is None
    assert fields["page_username"] == fields["page_category"] == fields["page_timezone"] == ""


def test_an_error_report_of_a_crash_inside_call_hides_the_credential(http, monkeypatch):
    import sys

    from django.views.debug import ExceptionReporter

    def crash(payload):
        raise RuntimeError("bug while reading the envelope")

    monkeypatch.setattr(api, "_api_message", crash)
    http.answer(json={"status": "success", "data": INFO})
    try:
        api.get_page_info(KEY)
    except RuntimeError:
        reporter = ExceptionReporter(None, *sys.exc_info(), is_email=True)
        report = reporter.get_traceback_text() + reporter.get_traceback_html()
    assert "bug while reading the envelope" in report
    assert "credential" in report  # the variable is listed, its value is not
    assert KEY not in report
