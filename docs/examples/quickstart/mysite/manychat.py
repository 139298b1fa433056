"""Calling Manychat's API for a connected user (included in the quickstart, tested in tests/test_docs.py)."""

# --8<-- [start:usage]
from manychat_oauth.api import ManychatClient
from manychat_oauth.models import ManychatConnection


def page_info(user, page_id):
    """The Manychat page ``page_id`` as Manychat's getInfo describes it, for ``user``."""
    connection = ManychatConnection.objects.active().get(user=user, page_id=page_id)
    # The client takes a valid token from the connection (refreshing it first
    # when it is due) and calls MANYCHAT_OAUTH_API_BASE_URL with the timeout.
    return ManychatClient(connection).get_page_info()  # getInfo's "data": id, name, ...


# --8<-- [end:usage]
