"""``EncryptedTextField``: a text column encrypted with Fernet (AES-128-CBC + HMAC).

Written here on purpose (see PITFALLS.md): the published encrypted-field
packages either fail to import on current Django, store the text of an
expression on ``bulk_update()``/``update()``, hand back ciphertext when the key
is wrong, or cannot rotate keys.
"""

from __future__ import annotations

import base64
import binascii
import functools
from collections.abc import Sequence
from typing import Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from django.conf import settings
from django.core.exceptions import FieldError, ImproperlyConfigured
from django.db import models
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.models.expressions import Col, Value

from .conf import app_settings
from .exceptions import TokenDecryptionError

HKDF_SALT = b"django-manychat-oauth"
HKDF_INFO = b"manychat_oauth.fields.EncryptedTextField"


def derive_key(secret: str | bytes) -> bytes:
    """Derive a Fernet key from a Django ``SECRET_KEY`` with HKDF-SHA256."""
    if isinstance(secret, str):
        secret = secret.encode()
    hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=HKDF_SALT, info=HKDF_INFO)
    return base64.urlsafe_b64encode(hkdf.derive(secret))


def validate_fernet_key(key: Any) -> bytes:
    """Return ``key`` as bytes, or raise ``ValueError`` if it is not a Fernet key."""
    if isinstance(key, str):
        key = key.encode()
    if not isinstance(key, bytes):
        raise ValueError("a Fernet key must be a string")
    try:
        raw = base64.urlsafe_b64decode(key)
    except (binascii.Error, ValueError):
        raise ValueError("a Fernet key must be url-safe base64") from None
    if len(raw) != 32:
        raise ValueError("a Fernet key must decode to 32 bytes")
    return key


def configured_keys() -> tuple[bytes, ...]:
    """The keys in use, newest first: the setting, or keys derived from ``SECRET_KEY``."""
    raw = app_settings.FERNET_KEYS
    if raw:
        if isinstance(raw, str | bytes) or not isinstance(raw, Sequence):
            raise ImproperlyConfigured("MANYCHAT_OAUTH_FERNET_KEYS must be a list of Fernet keys, newest first.")
        try:
            return tuple(validate_fernet_key(key) for key in raw)
        except ValueError:
            raise ImproperlyConfigured(
                "MANYCHAT_OAUTH_FERNET_KEYS holds a malformed key. Generate keys with "
                "cryptography.fernet.Fernet.generate_key()."
            ) from None
    secrets = [settings.SECRET_KEY, *getattr(settings, "SECRET_KEY_FALLBACKS", [])]
    return tuple(derive_key(secret) for secret in secrets)


@functools.lru_cache(maxsize=8)
def _multifernet(keys: tuple[bytes, ...]) -> MultiFernet:
    return MultiFernet([Fernet(key) for key in keys])


def get_fernet() -> MultiFernet:
    """A ``MultiFernet`` over the configured keys (cached per key list)."""
    return _multifernet(configured_keys())


def encrypt_str(value: str) -> str:
    return get_fernet().encrypt(value.encode()).decode("ascii")


def decrypt_str(token: str | bytes, *, label: str = "a value") -> str:
    if isinstance(token, str):
        token = token.encode("ascii", errors="replace")
    try:
        return get_fernet().decrypt(token).decode()
    except InvalidToken:
        raise TokenDecryptionError(
            f"Could not decrypt {label} with any key in MANYCHAT_OAUTH_FERNET_KEYS "
            "(or the keys derived from SECRET_KEY and SECRET_KEY_FALLBACKS). "
            "Put the key it was written with back in the list, after the newest key."
        ) from None


def rotate_str(token: str) -> str:
    """Re-encrypt ``token`` with the newest key (raises like ``decrypt_str``)."""
    try:
        return get_fernet().rotate(token.encode("ascii")).decode("ascii")
    except InvalidToken:
        raise TokenDecryptionError(
            "Could not decrypt a stored value with any key in MANYCHAT_OAUTH_FERNET_KEYS."
        ) from None


class EncryptedTextField(models.TextField):  # type: ignore[type-arg]
    """A ``TextField`` stored as Fernet ciphertext.

    Only ``isnull`` lookups are allowed: the ciphertext of a value differs on
    each write, so equality, ordering and text lookups cannot work.
    """

    description = "Text encrypted with Fernet"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        if kwargs.get("primary_key") or kwargs.get("unique") or kwargs.get("db_index"):
            raise ImproperlyConfigured(
                "EncryptedTextField cannot be a primary key, unique or indexed: its ciphertext changes on every write."
            )
        super().__init__(*args, **kwargs)

    @property
    def _label(self) -> str:
        model = getattr(self, "model", None)
        return f"{model._meta.label}.{self.name}" if model else "an encrypted field"

    def get_db_prep_save(self, value: Any, connection: BaseDatabaseWrapper) -> Any:
        if value is None:
            return None
        if hasattr(value, "as_sql"):
            return self._prep_expression(value)
        return encrypt_str(str(value))

    def _prep_expression(self, expression: Any) -> Any:
        # update(field=Value("x")): encrypt the value itself, never the text
        # of the expression, and never store it in plain text.
        if isinstance(expression, Value):
            if expression.value is None:
                return Value(None)
            return Value(encrypt_str(str(expression.value)), output_field=models.TextField())
        # Copying another encrypted column copies valid ciphertext.
        if isinstance(expression, Col) and isinstance(expression.target, EncryptedTextField):
            return expression
        # bulk_update() wraps each value in Value(output_field=self), which is
        # encrypted when the Case compiles; anything else would store plain text.
        if all(isinstance(source, Value) and source.output_field is self for source in _leaf_values(expression)):
            return expression
        raise FieldError(
            f"{self._label} cannot be set from the expression {type(expression).__name__}: "
            "assign a plain string instead."
        )

    def from_db_value(self, value: Any, expression: Any, connection: BaseDatabaseWrapper) -> Any:
        if value is None:
            return None
        return decrypt_str(value, label=self._label)

    def get_lookup(self, lookup_name: str) -> Any:
        if lookup_name == "isnull":
            return super().get_lookup(lookup_name)
        raise FieldError(f"{self._label} is encrypted: only the isnull lookup is supported, not {lookup_name!r}.")

    def get_transform(self, lookup_name: str) -> Any:
        raise FieldError(f"{self._label} is encrypted: transforms such as {lookup_name!r} are not supported.")


def _leaf_values(expression: Any) -> list[Any]:
    """The leaves of an expression tree that are values (``When`` conditions aside)."""
    from django.db.models import Case, When
    from django.db.models.functions import Cast

    if isinstance(expression, Cast):
        # PostgreSQL's bulk_update() wraps the Case in a Cast to the field's type.
        return _leaf_values(expression.source_expressions[0])
    if isinstance(expression, Case):
        leaves: list[Any] = []
        for when in expression.cases:
            leaves.extend(_leaf_values(when))
        leaves.extend(_leaf_values(expression.default))
        return leaves
    if isinstance(expression, When):
        return _leaf_values(expression.result)
    if isinstance(expression, Value) and expression.value is None:
        return []
    return [expression]
