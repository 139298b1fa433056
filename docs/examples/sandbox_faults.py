"""Sandbox faults (included in docs/sandbox.md, run by tests/test_docs.py)."""

# --8<-- [start:faults]
from manychat_oauth.sandbox.faults import set_fault

# Faults on one endpoint apply in the order they were set.
set_fault("token", status=503, times=2)  # the next two token requests fail
set_fault("token", status=429, retry_after="120", times=1)  # then one is throttled, with Retry-After
set_fault("token", latency_ms=3000, latency_after=True, times=1)  # then one is done but answered late
set_fault("token", latency_ms=50)  # then every token request takes 50 ms more, until cleared
set_fault("getinfo", status=502, body="<html>Bad gateway</html>", content_type="text/html")
# --8<-- [end:faults]
