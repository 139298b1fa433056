"""Switch sandbox faults on and off (from tests, benchmarks or the shell)."""

from __future__ import annotations

import time
from typing import Any

from django.db.models import F, Q
from django.http import HttpResponse

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
        remaining=times,
    )


def clear_faults() -> None:
    SandboxFault.objects.all().delete()


class FaultPlan:
    """What a request must suffer: a response to send instead, and delays."""

    def __init__(self, fault: SandboxFault | None) -> None:
        self.fault = fault

    def before(self) -> HttpResponse | None:
        fault = self.fault
        if fault is None:
            return None
        if fault.latency_ms and not fault.latency_after:
            time.sleep(fault.latency_ms / 1000)
        if fault.status_code:
            response = HttpResponse(fault.body, status=fault.status_code, content_type=fault.content_type)
            if fault.retry_after:
                response["Retry-After"] = fault.retry_after
            return response
        return None

    def after(self) -> None:
        if self.fault is not None and self.fault.latency_ms and self.fault.latency_after:
            time.sleep(self.fault.latency_ms / 1000)


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
