"""A receiver for ``reauth_required`` (included in docs/signals.md, run by tests/test_docs.py)."""

# --8<-- [start:receiver]
from django.core.mail import send_mail
from django.dispatch import receiver

from manychat_oauth.models import ManychatConnection
from manychat_oauth.signals import reauth_required


@receiver(reauth_required, sender=ManychatConnection, dispatch_uid="ask_the_user_to_reconnect")
def ask_the_user_to_reconnect(sender, connection, **kwargs):
    if connection.user.email:
        send_mail(
            "Please reconnect your Manychat page",
            f"Manychat no longer accepts our access to {connection.page_name or connection.page_id}. "
            "Open your connections page and connect it again.",
            None,  # DEFAULT_FROM_EMAIL
            [connection.user.email],
        )


# --8<-- [end:receiver]
