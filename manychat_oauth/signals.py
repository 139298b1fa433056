"""Signals sent over a connection's life.

Every signal is sent with ``sender=ManychatConnection`` and ``connection=`` the
row concerned.
"""

from __future__ import annotations

from django.dispatch import Signal

#: A user connected a page (OAuth, API key or App install); also on reconnect.
connection_connected = Signal()
#: A refresh stored new tokens.
tokens_refreshed = Signal()
#: The provider refused the credentials; the user must connect again.
reauth_required = Signal()
#: The user (or an operator) disconnected the page.
connection_disconnected = Signal()
