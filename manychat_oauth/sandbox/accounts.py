"""Sandbox pages and their API keys, as a Manychat account owner would create them."""

from __future__ import annotations

import secrets
import string

from django.db import transaction
from django.utils import timezone

from .models import SandboxApiKey, SandboxPage

#: Characters of the secret part of a key, as in Manychat's ``<page_id>:<alnum>``.
KEY_ALPHABET = string.ascii_letters + string.digits
KEY_SECRET_LENGTH = 32


class SandboxError(ValueError):
    """A sandbox request that cannot be done (unknown page, duplicate id...)."""


def new_page_id() -> str:
    """An unused numeric page id, like Facebook's."""
    while True:
        page_id = str(secrets.randbelow(9 * 10**14) + 10**14)
        if not SandboxPage.objects.filter(page_id=page_id).exists():
            return page_id


def create_page(name: str, *, page_id: str | None = None, username: str = "", category: str = "") -> SandboxPage:
    """A new sandbox page; ``page_id`` must be digits and unused."""
    name = name.strip()
    if not name:
        raise SandboxError("A page needs a name.")
    if page_id is None:
        page_id = new_page_id()
    if not page_id.isdigit() or len(page_id) > 32:
        raise SandboxError(f"Page id {page_id!r} is not a number: Manychat page ids are digits only.")
    with transaction.atomic():
        if SandboxPage.objects.filter(page_id=page_id).exists():
            raise SandboxError(f"A sandbox page with id {page_id} already exists.")
        return SandboxPage.objects.create(
            page_id=page_id, name=name, username=username, **({"category": category} if category else {})
        )


def get_page(page_id: str) -> SandboxPage:
    page = SandboxPage.objects.filter(page_id=page_id).first()
    if page is None:
        raise SandboxError(f"No sandbox page has id {page_id}. Create it with: manychat_sandbox create-page.")
    return page


def create_api_key(page: SandboxPage) -> SandboxApiKey:
    """A new API key for ``page``: ``<page_id>:<32 letters and digits>``."""
    secret = "".join(secrets.choice(KEY_ALPHABET) for _ in range(KEY_SECRET_LENGTH))
    return SandboxApiKey.objects.create(page=page, key=f"{page.page_id}:{secret}")


def revoke_api_keys(page: SandboxPage) -> int:
    """Revoke every active key of ``page``; ``getInfo`` then answers 401 "Wrong token". Returns how many."""
    return SandboxApiKey.objects.filter(page=page, revoked_at__isnull=True).update(revoked_at=timezone.now())
