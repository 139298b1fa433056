"""A receiver for ``reauth_required`` (included in docs/signals.md, run by tests/test_docs.py)."""

# --8<-- [start:receiver]
from django.core.mail import mail_managers
from django.dispatch import receiver

from manychat_oauth.models import ManychatConnection
from manychat_oauth.signals import reauth_required


@receiver(reauth_required, sender=ManychatConnection, dispatch_uid="tell_the_managers")
def tell_the_managers(sender, connection, **kwargs):
    mail_managers(
        "Manychat connection needs attention",
        f"{connection.user} must reconnect {connection.page_name or connection.page_id}.",
    )


# --8<-- [end:receiver]
