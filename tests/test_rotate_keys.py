"""``manychat_rotate_keys``: re-encrypting every stored token with the newest key."""

from __future__ import annotations

import io

import pytest
from cryptography.fernet import Fernet
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection

from manychat_oauth import keys
from manychat_oauth.exceptions import TokenDecryptionError
from manychat_oauth.fields import derive_key
from manychat_oauth.models import ManychatConnection

pytestmark = pytest.mark.django_db

K0, K1, K2 = (Fernet.generate_key().decode() for _ in range(3))


def raw(pk: int) -> tuple[str | None, str | None]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT access_token, refresh_token FROM manychat_oauth_manychatconnection WHERE id = %s", [pk])
        return cursor.fetchone()


def under(key: str, ciphertext: str | None) -> bool:
    try:
        Fernet(key).decrypt(ciphertext.encode())
    except Exception:
        return False
    return True


def make_rows(user, count: int) -> dict[int, tuple[str | None, str | None]]:
    """``count`` connections with distinct tokens; every third has no refresh token, one has ''."""
    rows = {}
    for i in range(count):
        refresh = None if i % 3 == 2 else f"refresh-{i}"
        access = "" if i == 1 else f"access-{i}"
        row = ManychatConnection.objects.create(user=user, page_id=str(i), access_token=access, refresh_token=refresh)
        rows[row.pk] = (access, refresh)
    ManychatConnection.objects.create(user=user, page_id="gone", access_token=None, refresh_token=None)
    return rows


def tokens_read_back(rows: dict[int, tuple[str | None, str | None]]) -> None:
    for pk, expected in rows.items():
        row = ManychatConnection.objects.get(pk=pk)
        assert (row.access_token, row.refresh_token) == expected


def test_rotation_moves_every_token_to_the_newest_key_so_the_old_key_can_go(user, settings):
    settings.MANYCHAT_OAUTH_FERNET_KEYS = [K1]
    rows = make_rows(user, 7)
    before = {pk: raw(pk) for pk in rows}
    settings.MANYCHAT_OAUTH_FERNET_KEYS = [K2, K1]

    report = keys.rotate_keys(batch_size=3)

    assert (report.total, report.examined, report.rotated, report.current) == (7, 7, 7, 0)
    assert report.ok and not report.undecryptable
    for pk, (old_access, old_refresh) in before.items():
        new_access, new_refresh = raw(pk)
        assert new_access != old_access and under(K2, new_access) and not under(K1, new_access)
        assert (new_refresh is None) == (old_refresh is None)
        assert new_refresh is None or (new_refresh != old_refresh and under(K2, new_refresh))
    settings.MANYCHAT_OAUTH_FERNET_KEYS = [K2]
    tokens_read_back(rows)


def test_rotation_leaves_empty_connections_and_other_columns_alone(user, settings):
    settings.MANYCHAT_OAUTH_FERNET_KEYS = [K1]
    row = ManychatConnection.objects.create(user=user, page_id="1", page_name="Kept", access_token="a", last_error="x")
    updated_at = ManychatConnection.objects.get(pk=row.pk).updated_at
    empty = ManychatConnection.objects.create(user=user, page_id="2", access_token=None)
    settings.MANYCHAT_OAUTH_FERNET_KEYS = [K2, K1]
    keys.rotate_keys()
    row = ManychatConnection.objects.get(pk=row.pk)
    assert (row.page_name, row.last_error, row.updated_at) == ("Kept", "x", updated_at)
    assert raw(empty.pk) == (None, None)


def test_a_second_run_changes_nothing(user, settings):
    settings.MANYCHAT_OAUTH_FERNET_KEYS = [K1]
    rows = make_rows(user, 4)
    settings.MANYCHAT_OAUTH_FERNET_KEYS = [K2, K1]
    keys.rotate_keys()
    after_first = {pk: raw(pk) for pk in rows}

    report = keys.rotate_keys()

    assert (report.rotated, report.current) == (0, 4)
    assert {pk: raw(pk) for pk in rows} == after_first


def test_an_interrupted_run_keeps_its_finished_batches_and_a_rerun_completes(user, settings):
    settings.MANYCHAT_OAUTH_FERNET_KEYS = [K1]
    rows = make_rows(user, 10)
    settings.MANYCHAT_OAUTH_FERNET_KEYS = [K2, K1]

    def interrupt(done: int, total: int) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        keys.rotate_keys(batch_size=5, on_progress=interrupt)
    states = [under(K2, raw(pk)[0]) for pk in sorted(rows)]
    assert states == [True] * 5 + [False] * 5

    report = keys.rotate_keys(batch_size=5)

    assert (report.rotated, report.current) == (5, 5)
    settings.MANYCHAT_OAUTH_FERNET_KEYS = [K2]
    tokens_read_back(rows)


def test_dry_run_counts_and_writes_nothing(user, settings):
    settings.MANYCHAT_OAUTH_FERNET_KEYS = [K1]
    rows = make_rows(user, 4)
    before = {pk: raw(pk) for pk in rows}
    settings.MANYCHAT_OAUTH_FERNET_KEYS = [K2, K1]
    out = io.StringIO()
    call_command("manychat_rotate_keys", "--dry-run", stdout=out, stderr=io.StringIO())
    assert "would re-encrypt 4" in out.getvalue() and "nothing was changed" in out.getvalue()
    assert {pk: raw(pk) for pk in rows} == before


def test_undecryptable_rows_are_reported_by_id_left_intact_and_the_rest_rotated(user, settings):
    settings.MANYCHAT_OAUTH_FERNET_KEYS = [K0]
    lost = ManychatConnection.objects.create(user=user, page_id="lost", access_token="lost-token-value")
    lost_raw = raw(lost.pk)
    settings.MANYCHAT_OAUTH_FERNET_KEYS = [K1]
    rows = make_rows(user, 3)
    settings.MANYCHAT_OAUTH_FERNET_KEYS = [K2, K1]
    out = io.StringIO()

    with pytest.raises(CommandError) as excinfo:
        call_command("manychat_rotate_keys", "--batch-size", "2", stdout=out, stderr=io.StringIO())

    message = str(excinfo.value)
    assert f"manychat_oauth.ManychatConnection pk={lost.pk}" in message
    assert "MANYCHAT_OAUTH_FERNET_KEYS" in message
    assert "lost-token-value" not in message + out.getvalue()
    assert "re-encrypted 3" in out.getvalue()
    assert raw(lost.pk) == lost_raw
    settings.MANYCHAT_OAUTH_FERNET_KEYS = [K2, K0]
    assert ManychatConnection.objects.get(pk=lost.pk).access_token == "lost-token-value"
    settings.MANYCHAT_OAUTH_FERNET_KEYS = [K2]
    tokens_read_back(rows)


def test_long_lists_of_undecryptable_rows_are_cut_short(user, settings):
    settings.MANYCHAT_OAUTH_FERNET_KEYS = [K0]
    for i in range(keys_command().MAX_LISTED + 2):
        ManychatConnection.objects.create(user=user, page_id=str(i), access_token="x")
    settings.MANYCHAT_OAUTH_FERNET_KEYS = [K2]
    with pytest.raises(CommandError, match="and 2 more"):
        call_command("manychat_rotate_keys", stdout=io.StringIO())


def keys_command():
    from manychat_oauth.management.commands import manychat_rotate_keys

    return manychat_rotate_keys


def test_a_token_refreshed_during_rotation_is_not_overwritten(user, settings, monkeypatch):
    settings.MANYCHAT_OAUTH_FERNET_KEYS = [K1]
    row = ManychatConnection.objects.create(user=user, page_id="1", access_token="old-at", refresh_token="old-rt")
    settings.MANYCHAT_OAUTH_FERNET_KEYS = [K2, K1]
    write = keys._write_if_unchanged
    calls = []

    def refresh_then_write(table, pk, old, new):
        if not calls:  # another process refreshes the row between our read and our write
            ManychatConnection.objects.filter(pk=pk).update(access_token="new-at")
        calls.append(pk)
        return write(table, pk, old, new)

    monkeypatch.setattr(keys, "_write_if_unchanged", refresh_then_write)
    report = keys.rotate_keys()

    assert len(calls) == 2 and report.rotated == 1 and report.ok
    settings.MANYCHAT_OAUTH_FERNET_KEYS = [K2]
    row.refresh_from_db()
    assert (row.access_token, row.refresh_token) == ("new-at", "old-rt")


def test_a_row_that_keeps_changing_is_reported_and_never_clobbered(user, settings, monkeypatch):
    settings.MANYCHAT_OAUTH_FERNET_KEYS = [K1]
    row = ManychatConnection.objects.create(user=user, page_id="1", access_token="at-0", refresh_token="rt")
    settings.MANYCHAT_OAUTH_FERNET_KEYS = [K2, K1]
    write = keys._write_if_unchanged

    def busy_writer(table, pk, old, new):
        # An old process, still on [K1], keeps rewriting the row.
        settings.MANYCHAT_OAUTH_FERNET_KEYS = [K1]
        ManychatConnection.objects.filter(pk=pk).update(refresh_token="rt-latest")
        settings.MANYCHAT_OAUTH_FERNET_KEYS = [K2, K1]
        return write(table, pk, old, new)

    monkeypatch.setattr(keys, "_write_if_unchanged", busy_writer)
    with pytest.raises(CommandError, match="kept changing"):
        call_command("manychat_rotate_keys", stdout=io.StringIO())
    row.refresh_from_db()
    assert row.refresh_token == "rt-latest"


def test_a_row_deleted_during_rotation_is_skipped(user, settings, monkeypatch):
    settings.MANYCHAT_OAUTH_FERNET_KEYS = [K1]
    ManychatConnection.objects.create(user=user, page_id="1", access_token="at")
    settings.MANYCHAT_OAUTH_FERNET_KEYS = [K2, K1]
    write = keys._write_if_unchanged

    def delete_then_write(table, pk, old, new):
        ManychatConnection.objects.filter(pk=pk).delete()
        return write(table, pk, old, new)

    monkeypatch.setattr(keys, "_write_if_unchanged", delete_then_write)
    report = keys.rotate_keys()
    assert (report.rotated, report.current, report.ok) == (0, 0, True)


def test_rotation_works_with_keys_derived_from_secret_key_fallbacks(user, settings):
    settings.MANYCHAT_OAUTH_FERNET_KEYS = None
    settings.SECRET_KEY = "old-secret-key-" + "x" * 40
    row = ManychatConnection.objects.create(user=user, page_id="1", access_token="at", refresh_token="rt")
    settings.SECRET_KEY, settings.SECRET_KEY_FALLBACKS = "new-secret-key-" + "y" * 40, [settings.SECRET_KEY]

    assert keys.rotate_keys().rotated == 1

    settings.SECRET_KEY_FALLBACKS = []
    assert under(derive_key(settings.SECRET_KEY).decode(), raw(row.pk)[0])
    row.refresh_from_db()
    assert (row.access_token, row.refresh_token) == ("at", "rt")


def test_command_prints_a_count_and_no_progress_when_stderr_is_not_a_terminal(user, settings, monkeypatch):
    settings.MANYCHAT_OAUTH_FERNET_KEYS = [K1]
    make_rows(user, 3)
    settings.MANYCHAT_OAUTH_FERNET_KEYS = [K2, K1]
    fake_stderr = io.StringIO()
    monkeypatch.setattr("sys.stderr", fake_stderr)
    out = io.StringIO()
    call_command("manychat_rotate_keys", stdout=out)
    assert "3 row(s) examined: re-encrypted 3, 0 already under the newest key" in out.getvalue()
    assert fake_stderr.getvalue() == ""


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_command_shows_a_progress_bar_on_a_terminal(user, settings, monkeypatch):
    settings.MANYCHAT_OAUTH_FERNET_KEYS = [K1]
    make_rows(user, 4)
    settings.MANYCHAT_OAUTH_FERNET_KEYS = [K2, K1]
    terminal = Terminal()
    monkeypatch.setattr("sys.stderr", terminal)
    call_command("manychat_rotate_keys", "--batch-size", "2", stdout=io.StringIO())
    shown = terminal.getvalue()
    assert "2/4 rows (50%)" in shown and "4/4 rows (100%)" in shown and shown.endswith("\n")


def test_progress_bar_handles_an_empty_table():
    from manychat_oauth.management.commands.manychat_rotate_keys import Progress

    terminal = Terminal()
    progress = Progress(terminal)
    progress.done()
    assert terminal.getvalue() == ""
    progress(0, 0)
    assert "0/0 rows (100%)" in terminal.getvalue()


@pytest.mark.parametrize("size", ["0", "-3"])
def test_batch_size_must_be_positive(size):
    with pytest.raises(CommandError, match="--batch-size"):
        call_command("manychat_rotate_keys", "--batch-size", size)
    with pytest.raises(ValueError):
        keys.rotate_keys(batch_size=int(size))


def test_malformed_keys_give_a_command_error(settings):
    settings.MANYCHAT_OAUTH_FERNET_KEYS = ["not-a-key"]
    with pytest.raises(CommandError, match="malformed key"):
        call_command("manychat_rotate_keys")


def test_rotate_str_refuses_a_value_no_key_decrypts(settings):
    from manychat_oauth.fields import rotate_str

    settings.MANYCHAT_OAUTH_FERNET_KEYS = [K0]
    ciphertext = Fernet(K0).encrypt(b"secret").decode()
    settings.MANYCHAT_OAUTH_FERNET_KEYS = [K2]
    with pytest.raises(TokenDecryptionError):
        rotate_str(ciphertext)


def test_only_models_with_encrypted_fields_are_rotated():
    tables = keys.encrypted_tables()
    assert [(t.label, t.columns) for t in tables] == [
        ("manychat_oauth.ManychatConnection", ("access_token", "refresh_token"))
    ]


def test_moving_from_derived_keys_to_explicit_keys(user, settings):
    settings.MANYCHAT_OAUTH_FERNET_KEYS = None
    row = ManychatConnection.objects.create(user=user, page_id="1", access_token="at", refresh_token="rt")
    # As the README says: list the new key first and the key derived from SECRET_KEY after it.
    settings.MANYCHAT_OAUTH_FERNET_KEYS = [K2, derive_key(settings.SECRET_KEY).decode()]
    assert keys.rotate_keys().rotated == 1
    settings.MANYCHAT_OAUTH_FERNET_KEYS = [K2]
    row.refresh_from_db()
    assert (row.access_token, row.refresh_token) == ("at", "rt")
