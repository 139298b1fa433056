"""Switch sandbox faults on and off (from tests, benchmarks or the shell)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

from django.db.models import F, Q
from django.http import HttpResponse, StreamingHttpResponse
from django.http.response import HttpResponseBase

from .models import SandboxFault


def set_fault(
    endpoint: str = SandboxFault.Endpoint.ANY,
    *,
    status: int | None = None,
    body: str | dict[str, Any] = "",
    content_type: str = "application/json",
    retry_after: str = "",
    latency_ms: int = 0,
    latency_after: bool = False,
    chunk_delay_ms: int = 0,
    times: int | None = None,
) -> SandboxFault:
    """Make ``endpoint`` fail (or slow down) for the next ``times`` requests."""
    import json

    if isinstance(body, dict):
        body = json.dumps(body)
    return SandboxFault.objects.create(
        endpoint=endpoint,
        status_code=status,
        body=body,
        content_type=content_type,
        retry_after=retry_after,
        latency_ms=latency_ms,
        latency_after=latency_after,
        chunk_delay_ms=chunk_delay_ms,
        remaining=times,
    )


def clear_faults() -> None:
    SandboxFault.objects.all().delete()


#: Bytes per piece of a slow body.
SLOW_CHUNK_BYTES = 16


class FaultPlan:
    """What a request must suffer: a response to send instead, delays, a slow body."""

    def __init__(self, fault: SandboxFault | None) -> None:
        self.fault = fault

    def before(self) -> HttpResponseBase | None:
        fault = self.fault
        if fault is None:
            return None
        if fault.latency_ms and not fault.latency_after:
            time.sleep(fault.latency_ms / 1000)
        if fault.status_code:
            response = HttpResponse(fault.body, status=fault.status_code, content_type=fault.content_type)
            if fault.retry_after:
                response["Retry-After"] = fault.retry_after
            return self.slowed(response)
        return None

    def after(self) -> None:
        if self.fault is not None and self.fault.latency_ms and self.fault.latency_after:
            time.sleep(self.fault.latency_ms / 1000)

    def deliver(self, response: HttpResponse) -> HttpResponseBase:
        """The endpoint's own answer, after any ``latency_after`` delay, slowed if asked."""
        self.after()
        return self.slowed(response)

    def slowed(self, response: HttpResponse) -> HttpResponseBase:
        """``response`` streamed in small pieces, each after ``chunk_delay_ms``."""
        if self.fault is None or not self.fault.chunk_delay_ms:
            return response
        slow = StreamingHttpResponse(
            _trickle(response.content, self.fault.chunk_delay_ms / 1000), status=response.status_code
        )
        for header, value in response.items():
            slow[header] = value
        return slow


def _trickle(body: bytes, delay: float) -> Iterator[bytes]:
    """The first piece at once (so the status line and headers go out), then a pause before each other piece."""
    for start in range(0, len(body), SLOW_CHUNK_BYTES):
        if start:
            time.sleep(delay)
        yield body[start : start + SLOW_CHUNK_BYTES]


def take_fault(endpoint: str) -> FaultPlan:
    """The oldest fault matching ``endpoint``, consuming one of its uses."""
    for fault in SandboxFault.objects.filter(Q(endpoint=endpoint) | Q(endpoint=SandboxFault.Endpoint.ANY)).order_by(
        "pk"
    ):
        if fault.remaining is None:
            return FaultPlan(fault)
        if SandboxFault.objects.filter(pk=fault.pk, remaining__gt=0).update(remaining=F("remaining") - 1):
            return FaultPlan(fault)
    return FaultPlan(None)
