from __future__ import annotations

import pytest
from cryptography.fernet import Fernet
from django.core.exceptions import FieldError, ImproperlyConfigured
from django.db import connection
from django.db.models import Value

from manychat_oauth.exceptions import TokenDecryptionError
from manychat_oauth.fields import EncryptedTextField, configured_keys, derive_key
from manychat_oauth.models import ManychatConnection

pytestmark = pytest.mark.django_db


def raw_column(pk: int, column: str = "access_token") -> str | None:
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {column} FROM manychat_oauth_manychatconnection WHERE id = %s", [pk])
        return cursor.fetchone()[0]


def make(user, **kwargs) -> ManychatConnection:
    kwargs.setdefault("page_id", str(ManychatConnection.objects.count() + 1))
    return ManychatConnection.objects.create(user=user, **kwargs)


def test_column_holds_ciphertext_not_the_value(user):
    conn = make(user, access_token="plain-access-123", refresh_token="plain-refresh-456")
    stored = raw_column(conn.pk)
    assert stored and "plain-access-123" not in stored
    assert stored.startswith("gAAAAA")  # a Fernet token
    conn.refresh_from_db()
    assert conn.access_token == "plain-access-123"
    assert conn.refresh_token == "plain-refresh-456"


def test_same_value_encrypts_differently_each_time(user):
    a = make(user, access_token="same")
    b = make(user, access_token="same")
    assert raw_column(a.pk) != raw_column(b.pk)


def test_none_stays_null_and_empty_string_round_trips(user):
    conn = make(user, access_token=None, refresh_token="")
    assert raw_column(conn.pk) is None
    assert raw_column(conn.pk, "refresh_token") not in (None, "")
    conn.refresh_from_db()
    assert conn.access_token is None
    assert conn.refresh_token == ""


@pytest.mark.parametrize("lookup", ["exact", "iexact", "contains", "startswith", "in", "gt", "regex"])
def test_every_lookup_but_isnull_raises_field_error(user, lookup):
    value = ["x"] if lookup == "in" else "x"
    with pytest.raises(FieldError, match="encrypted"):
        list(ManychatConnection.objects.filter(**{f"access_token__{lookup}": value}))


def test_plain_equality_filter_raises_field_error(user):
    with pytest.raises(FieldError):
        list(ManychatConnection.objects.filter(access_token="x"))


def test_isnull_lookup_works(user):
    with_token = make(user, access_token="t")
    make(user, access_token=None)
    assert list(ManychatConnection.objects.filter(access_token__isnull=False)) == [with_token]


def test_bulk_update_stores_ciphertext_of_the_value(user):
    rows = [make(user, access_token=f"old-{i}") for i in range(3)]
    for i, row in enumerate(rows):
        row.access_token = f"bulk-new-{i}"
    ManychatConnection.objects.bulk_update(rows, ["access_token"])
    for i, row in enumerate(rows):
        stored = raw_column(row.pk)
        assert "bulk-new" not in stored and "Value(" not in stored and "Case(" not in stored
        row.refresh_from_db()
        assert row.access_token == f"bulk-new-{i}"


def test_queryset_update_with_a_string_stores_ciphertext(user):
    conn = make(user, access_token="old")
    ManychatConnection.objects.filter(pk=conn.pk).update(access_token="updated-value")
    assert "updated-value" not in raw_column(conn.pk)
    conn.refresh_from_db()
    assert conn.access_token == "updated-value"


def test_queryset_update_with_value_expression_stores_ciphertext_of_the_value(user):
    conn = make(user, access_token="old")
    ManychatConnection.objects.filter(pk=conn.pk).update(access_token=Value("via-value"))
    stored = raw_column(conn.pk)
    assert "via-value" not in stored and "Value(" not in stored
    conn.refresh_from_db()
    assert conn.access_token == "via-value"


def test_queryset_update_with_other_expression_is_refused(user):
    from django.db.models.functions import Concat

    conn = make(user, access_token="old", page_name="p")
    with pytest.raises(FieldError, match="cannot be set from the expression"):
        ManychatConnection.objects.filter(pk=conn.pk).update(access_token=Concat("page_name", Value("x")))


def test_copying_one_encrypted_column_to_another_keeps_it_readable(user):
    from django.db.models import F

    conn = make(user, access_token="copy-me", refresh_token=None)
    ManychatConnection.objects.filter(pk=conn.pk).update(refresh_token=F("access_token"))
    conn.refresh_from_db()
    assert conn.refresh_token == "copy-me"


def test_value_no_key_can_decrypt_raises_an_error_naming_the_setting(user, settings):
    conn = make(user, access_token="secret-under-old-key")
    settings.MANYCHAT_OAUTH_FERNET_KEYS = [Fernet.generate_key().decode()]
    with pytest.raises(TokenDecryptionError) as excinfo:
        ManychatConnection.objects.get(pk=conn.pk)
    message = str(excinfo.value)
    assert "MANYCHAT_OAUTH_FERNET_KEYS" in message
    assert "secret-under-old-key" not in message and raw_column(conn.pk) not in message


def test_old_key_in_second_place_still_reads_old_rows(user, settings):
    k1, k2 = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    settings.MANYCHAT_OAUTH_FERNET_KEYS = [k1]
    conn = make(user, access_token="written-with-k1")
    settings.MANYCHAT_OAUTH_FERNET_KEYS = [k2, k1]
    assert ManychatConnection.objects.get(pk=conn.pk).access_token == "written-with-k1"
    # New writes use the newest key: K2 alone can read them.
    new = make(user, access_token="written-with-k2")
    settings.MANYCHAT_OAUTH_FERNET_KEYS = [k2]
    assert ManychatConnection.objects.get(pk=new.pk).access_token == "written-with-k2"


def test_keys_are_derived_from_secret_key_and_fallbacks_when_unset(settings, user):
    settings.SECRET_KEY = "new-secret"
    settings.SECRET_KEY_FALLBACKS = ["old-secret"]
    assert configured_keys() == (derive_key("new-secret"), derive_key("old-secret"))
    settings.SECRET_KEY = "old-secret"
    settings.SECRET_KEY_FALLBACKS = []
    conn = make(user, access_token="under-old-secret")
    settings.SECRET_KEY = "new-secret"
    settings.SECRET_KEY_FALLBACKS = ["old-secret"]
    assert ManychatConnection.objects.get(pk=conn.pk).access_token == "under-old-secret"


def test_malformed_key_setting_raises_improperly_configured(settings):
    settings.MANYCHAT_OAUTH_FERNET_KEYS = ["not-a-key"]
    with pytest.raises(ImproperlyConfigured, match="malformed"):
        configured_keys()
    settings.MANYCHAT_OAUTH_FERNET_KEYS = "a-single-string"
    with pytest.raises(ImproperlyConfigured, match="list"):
        configured_keys()


@pytest.mark.parametrize("option", ["primary_key", "unique", "db_index"])
def test_field_cannot_be_indexed(option):
    with pytest.raises(ImproperlyConfigured):
        EncryptedTextField(**{option: True})


def test_transforms_are_refused():
    with pytest.raises(FieldError):
        ManychatConnection._meta.get_field("access_token").get_transform("lower")
