"""The one place where HTTP is faked: the thread's ``requests.Session.request``.

Only the narrow unit tests of ``client.py`` and ``api.py`` use it; every other
test talks real HTTP to the sandbox through ``live_server``. Everything above
the session (timeouts, auth encoding, error classification) runs for real, and
each request is prepared exactly as ``requests`` would put it on the wire.
"""

from __future__ import annotations

import json as jsonlib
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

import pytest
import requests
from requests.structures import CaseInsensitiveDict

from manychat_oauth import client


@dataclass
class Sent:
    """One request as it would have gone out."""

    prepared: requests.PreparedRequest
    timeout: Any

    @property
    def form(self) -> dict[str, str]:
        body = self.prepared.body or ""
        if isinstance(body, bytes):
            body = body.decode()
        return {k: v[0] for k, v in parse_qs(body, keep_blank_values=True).items()}

    @property
    def headers(self) -> CaseInsensitiveDict[str]:
        return self.prepared.headers


class FakeHTTP:
    """Queued answers (responses or exceptions) for the session's ``request``."""

    def __init__(self) -> None:
        self.answers: list[requests.Response | BaseException] = []
        self.sent: list[Sent] = []

    def answer(
        self,
        status: int = 200,
        *,
        json: Any = None,
        body: str | None = None,
        content_type: str = "application/json",
        headers: dict[str, str] | None = None,
    ) -> FakeHTTP:
        response = requests.Response()
        response.status_code = status
        text = jsonlib.dumps(json) if body is None else body
        response._content = text.encode()
        response.encoding = "utf-8"
        response.headers = CaseInsensitiveDict({"Content-Type": content_type, **(headers or {})})
        self.answers.append(response)
        return self

    def fail(self, exc: BaseException) -> FakeHTTP:
        self.answers.append(exc)
        return self

    def __call__(self, method: str, url: str, **kwargs: Any) -> requests.Response:
        timeout = kwargs.pop("timeout", None)
        kwargs.pop("stream", None)  # client.send() streams to bound the body's time; answers here are in memory
        self.sent.append(Sent(requests.Request(method, url, **kwargs).prepare(), timeout))
        answer = self.answers.pop(0)
        if isinstance(answer, BaseException):
            raise answer
        answer.url = url
        return answer

    @property
    def last(self) -> Sent:
        return self.sent[-1]


def install(monkeypatch: pytest.MonkeyPatch) -> FakeHTTP:
    """Replace this thread's session ``request`` with a ``FakeHTTP`` (undone after the test)."""
    fake = FakeHTTP()
    monkeypatch.setattr(client.get_session(), "request", fake)
    return fake
