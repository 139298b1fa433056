"""Calling Manychat's API for a connected user (included in the quickstart, tested in tests/test_docs.py)."""

# --8<-- [start:usage]
import requests

from manychat_oauth.conf import app_settings
from manychat_oauth.models import ManychatConnection


def page_info(user, page_id):
    """The Manychat page ``page_id`` as Manychat's getInfo describes it, for ``user``."""
    connection = ManychatConnection.objects.active().get(user=user, page_id=page_id)
    token = connection.get_access_token()  # refreshed first when it is due
    response = requests.get(
        f"{app_settings.API_BASE_URL}/fb/page/getInfo",  # https://api.manychat.com by default
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )
    response.raise_for_status()
    return response.json()["data"]


# --8<-- [end:usage]
