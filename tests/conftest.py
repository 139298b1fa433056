from __future__ import annotations

import re
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from django.dispatch import Signal
from django.test import Client

from . import fakehttp, hygiene


@dataclass
class Sandbox:
    """The Manychat sandbox served by ``live_server``, reached over real HTTP."""

    base: str
    server_url: str

    def consent(self, authorize_url: str, decision: str = "approve") -> dict[str, str]:
        """Play the user on the consent page; return the query sent back to the callback."""
        with requests.Session() as browser:
            page = browser.get(authorize_url, timeout=10)
            assert page.status_code == 200, page.status_code
            form = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', page.text))
            form["decision"] = decision
            answer = browser.post(
                authorize_url.split("?")[0],
                data=form,
                headers={"Referer": authorize_url},
                allow_redirects=False,
                timeout=10,
            )
        assert answer.status_code == 302, answer.status_code
        return {k: v[0] for k, v in parse_qs(urlsplit(answer.headers["Location"]).query).items()}

    def fault(self, endpoint: str = "*", **kwargs: Any) -> Any:
        from manychat_oauth.sandbox.faults import set_fault

        return set_fault(endpoint, **kwargs)


@pytest.fixture
def sandbox(live_server: Any, settings: Any, transactional_db: None) -> Sandbox:
    base = f"{live_server.url}/sandbox/manychat"
    settings.MANYCHAT_OAUTH_AUTHORIZE_URL = f"{base}/oauth/authorize"
    settings.MANYCHAT_OAUTH_TOKEN_URL = f"{base}/oauth/token"
    settings.MANYCHAT_OAUTH_API_BASE_URL = base
    return Sandbox(base=base, server_url=live_server.url)


@pytest.fixture
def user(django_user_model: Any) -> Any:
    return django_user_model.objects.create_user("alice", "alice@example.com", "pw-alice")


@pytest.fixture
def other_user(django_user_model: Any) -> Any:
    return django_user_model.objects.create_user("bob", "bob@example.com", "pw-bob")


@pytest.fixture
def user_client(user: Any) -> Client:
    client = Client()
    client.force_login(user)
    return client


def closed_port() -> int:
    """A local port nothing listens on: connecting to it is refused."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def start_flow(client: Client, next_url: str | None = None) -> str:
    """POST to connect and return the authorize URL it redirects to."""
    response = client.post("/manychat/connect/", {"next": next_url} if next_url else {})
    assert response.status_code == 302
    return str(response["Location"])


@contextmanager
def captured(signal: Signal) -> Iterator[list[dict[str, Any]]]:
    """Collect the keyword arguments of every ``signal`` sent inside the block."""
    events: list[dict[str, Any]] = []
    uid = f"captured-{id(events)}"
    signal.connect(lambda **kwargs: events.append(kwargs), weak=False, dispatch_uid=uid)
    try:
        yield events
    finally:
        signal.disconnect(dispatch_uid=uid)


@pytest.fixture
def http(monkeypatch: pytest.MonkeyPatch) -> fakehttp.FakeHTTP:
    """Fake HTTP at the session boundary, for the unit tests of client.py and api.py only."""
    return fakehttp.install(monkeypatch)


@pytest.fixture
def all_logs() -> Any:
    """Every log record from every logger at DEBUG, for secret-hygiene assertions."""
    with hygiene.capture_all_logs() as captured:
        yield captured


@pytest.fixture(autouse=True)
def _empty_cache() -> Any:
    """Every test starts with an empty cache: the per-user key attempt limit lives there."""
    from django.core.cache import cache

    cache.clear()
    yield
