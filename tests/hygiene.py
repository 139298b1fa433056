"""Secret-hygiene helpers: capture every log record, then look for secrets anywhere.

``capture_all_logs()`` records every record at the one place every logger
passes through (``Logger.handle``), enables every logger and lowers
it (and ``logging.disable``) to DEBUG for the duration, and restores all of it
afterwards. The ``all_logs``
fixture in ``conftest.py`` wraps it.

``assert_no_secrets(haystacks, secrets)`` fails when any secret appears in any
haystack, in plain text or in a common encoding (URL-encoded, HTML-escaped,
JSON-escaped, base64 inside a Basic header), ignoring case.
"""

from __future__ import annotations

import base64
import html
import json
import logging
import traceback
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any
from urllib.parse import quote, quote_plus

#: Shorter "secrets" would match by accident; every real one is longer.
MIN_SECRET_LENGTH = 8
#: LogRecord attributes that every record has; anything else came from ``extra=``.
STANDARD_ATTRS = set(vars(logging.LogRecord("x", logging.INFO, "x", 0, "x", None, None))) | {"message", "asctime"}


class CapturedLogs(logging.Handler):
    """Every record emitted while capturing, from every logger and thread."""

    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def texts(self) -> Iterator[str]:
        """Everything a handler or formatter could write out for each record."""
        formatter = logging.Formatter()
        for record in self.records:
            yield f"{record.name}: {record.getMessage()}"
            yield str(record.msg)
            yield repr(record.args)
            if record.exc_info:
                yield formatter.formatException(record.exc_info)
            if record.exc_text:
                yield record.exc_text
            if record.stack_info:
                yield record.stack_info
            for name, value in vars(record).items():
                if name not in STANDARD_ATTRS:
                    yield f"{name}={value!r}"

    @property
    def messages(self) -> list[str]:
        return [f"{r.levelname} {r.name}: {r.getMessage()}" for r in self.records]


@contextmanager
def capture_all_logs() -> Iterator[CapturedLogs]:
    """Record every record any logger handles, whatever its handlers, filters or ``propagate``."""
    handler = CapturedLogs()
    manager = logging.root.manager
    loggers = [logging.root] + [lg for lg in manager.loggerDict.values() if isinstance(lg, logging.Logger)]
    saved = {lg: (lg.level, lg.disabled) for lg in loggers}
    saved_disable = manager.disable
    original_handle = logging.Logger.handle

    def handle(self: logging.Logger, record: logging.LogRecord) -> Any:
        handler.emit(record)
        return original_handle(self, record)

    logging.disable(logging.NOTSET)
    logging.Logger.handle = handle  # type: ignore[method-assign]
    try:
        for lg in loggers:
            lg.setLevel(logging.DEBUG)
            lg.disabled = False
        yield handler
    finally:
        logging.Logger.handle = original_handle  # type: ignore[method-assign]
        for lg, (level, disabled) in saved.items():
            lg.setLevel(level)
            lg.disabled = disabled
        logging.disable(saved_disable)


def encodings(secret: str) -> set[str]:
    """The forms a secret takes when it is written out by the usual means."""
    forms = {secret, quote(secret, safe=""), quote_plus(secret), html.escape(secret), json.dumps(secret)[1:-1]}
    forms.add(base64.b64encode(secret.encode()).decode().rstrip("="))
    return {form for form in forms if form}


def as_text(haystack: Any) -> str:
    if isinstance(haystack, bytes):
        return haystack.decode("utf-8", errors="replace")
    if isinstance(haystack, BaseException):
        return "\n".join([str(haystack), repr(haystack), *traceback.format_exception_only(haystack)])
    if isinstance(haystack, Mapping):
        return "\n".join(f"{k}: {v}" for k, v in haystack.items())
    return str(haystack)


def assert_no_secrets(haystacks: Iterable[Any], secrets: Mapping[str, str | None] | Iterable[str | None]) -> None:
    """Fail if any secret (or an encoding of it) appears in any haystack.

    ``secrets`` maps a label to each value (or is a plain list); ``None`` and
    empty values are skipped, too-short ones are refused as meaningless.
    """
    labelled = dict(secrets) if isinstance(secrets, Mapping) else {f"secret #{i}": s for i, s in enumerate(secrets)}
    wanted = {label: value for label, value in labelled.items() if value}
    assert wanted, "no secrets to look for: the test would prove nothing"
    for label, value in wanted.items():
        assert len(value) >= MIN_SECRET_LENGTH, f"{label} is too short to search for reliably"
    # Case-insensitive: a page may capitalise a message's first letter (the admin does).
    texts = [as_text(h).casefold() for h in haystacks]
    assert texts, "no haystacks to search: the test would prove nothing"
    for label, value in wanted.items():
        for form in {form.casefold() for form in encodings(value)}:
            for text in texts:
                at = text.find(form)
                assert at < 0, f"{label} leaked: ...{text[max(0, at - 60) : at].replace(form, '<SECRET>')}<SECRET>..."
