"""Re-encrypting stored tokens with the newest key (``manychat_rotate_keys``).

Every column of every installed model that is an ``EncryptedTextField`` is
read as raw ciphertext, in batches by primary key (keyset pagination, so each
query stays cheap and memory flat at any table size). A value the newest key
already decrypts is left alone; any other value is re-encrypted with
``MultiFernet.rotate`` (decrypt with whichever key works, encrypt with the
newest) and written back as ciphertext with raw SQL, bypassing the field so
nothing is encrypted twice.

Each write is conditional on the row still holding the ciphertext that was
read: a token refreshed by another process in the meantime is never replaced
by the older value (the row is read again and retried). Each batch commits on
its own, so an interrupted run keeps what it did and a rerun carries on; rows
already under the newest key are skipped, so reruns are cheap. Rows that no
configured key can decrypt are left untouched and reported by primary key.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

from cryptography.fernet import Fernet, InvalidToken
from django.apps import apps
from django.db import connections, router, transaction
from django.db.models import Model

from .exceptions import TokenDecryptionError
from .fields import EncryptedTextField, configured_keys, rotate_str

DEFAULT_BATCH_SIZE = 500
#: Times a row changed by another writer is read again before giving up on it.
MAX_ATTEMPTS = 3


@dataclass
class RotationReport:
    """What a rotation run did (or, with ``dry_run``, would do)."""

    dry_run: bool = False
    total: int = 0
    examined: int = 0
    rotated: int = 0
    current: int = 0
    #: Rows that kept changing under us (another writer); rerun to finish them.
    contended: int = 0
    #: ``(model label, primary key)`` of rows no configured key can decrypt.
    undecryptable: list[tuple[str, Any]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.undecryptable and not self.contended

    def summary(self) -> str:
        verb = "would re-encrypt" if self.dry_run else "re-encrypted"
        return (
            f"{self.examined} row(s) examined: {verb} {self.rotated}, "
            f"{self.current} already under the newest key, "
            f"{len(self.undecryptable)} undecryptable, {self.contended} changed during the run."
        )


@dataclass(frozen=True)
class EncryptedTable:
    """A model with encrypted columns, as raw SQL needs it."""

    model: type[Model]
    columns: tuple[str, ...]

    @property
    def label(self) -> str:
        return self.model._meta.label

    @property
    def using(self) -> str:
        return router.db_for_write(self.model)

    @property
    def db_table(self) -> str:
        return self.model._meta.db_table

    @property
    def pk_column(self) -> str:
        return str(self.model._meta.pk.column if self.model._meta.pk else "id")


def encrypted_tables() -> list[EncryptedTable]:
    """Every installed model with ``EncryptedTextField`` columns of its own.

    A proxy or a child model (multi-table inheritance) does not own its
    parent's columns, so each table is rotated once.
    """
    tables = []
    for model in apps.get_models():
        columns = tuple(
            str(f.column) for f in model._meta.concrete_fields if isinstance(f, EncryptedTextField) and f.model is model
        )
        if columns:
            tables.append(EncryptedTable(model, columns))
    return tables


def rotate_keys(
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    dry_run: bool = False,
    on_progress: Callable[[int, int], None] | None = None,
) -> RotationReport:
    """Re-encrypt every stored encrypted value with the newest configured key.

    ``on_progress(done, total)`` is called after each batch. Safe to rerun and
    to interrupt: each batch commits on its own.
    """
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    newest = Fernet(configured_keys()[0])
    report = RotationReport(dry_run=dry_run)
    tables = encrypted_tables()
    report.total = sum(_count(table) for table in tables)
    for table in tables:
        for batch in _batches(table, batch_size):
            with nullcontext() if dry_run else transaction.atomic(using=table.using):
                for pk, *values in batch:
                    _rotate_row(table, pk, list(values), newest, report)
            report.examined += len(batch)
            if on_progress is not None:
                on_progress(report.examined, max(report.total, report.examined))
    return report


def _rotate_row(
    table: EncryptedTable, pk: Any, values: list[str | None], newest: Fernet, report: RotationReport
) -> None:
    for _attempt in range(MAX_ATTEMPTS):
        try:
            rotated = [_rotated(value, newest) for value in values]
        except TokenDecryptionError:
            report.undecryptable.append((table.label, pk))
            return
        if all(new is None for new in rotated):
            report.current += 1
            return
        if report.dry_run or _write_if_unchanged(table, pk, values, rotated):
            report.rotated += 1
            return
        # Another writer changed the row since we read it: read it again.
        fresh = _read_row(table, pk)
        if fresh is None:
            return  # deleted meanwhile: nothing left to rotate
        values = fresh
    report.contended += 1


def _rotated(value: str | None, newest: Fernet) -> str | None:
    """The value under the newest key, or ``None`` when it needs no change."""
    if value is None:
        return None
    try:
        newest.decrypt(value.encode("ascii", errors="replace"))
    except InvalidToken:
        return rotate_str(value)
    return None


def _write_if_unchanged(table: EncryptedTable, pk: Any, old: list[str | None], new: list[str | None]) -> bool:
    """Write the changed columns if the row still holds ``old``; ``True`` on success."""
    connection = connections[table.using]
    quote = connection.ops.quote_name
    assignments: list[str] = []
    conditions: list[str] = []
    params: list[Any] = []
    for column, after in zip(table.columns, new, strict=True):
        if after is not None:
            assignments.append(f"{quote(column)} = %s")
            params.append(after)
    pk_column = quote(table.pk_column)
    conditions.append(f"{pk_column} = %s")
    params.append(pk)
    for column, before in zip(table.columns, old, strict=True):
        if before is None:
            conditions.append(f"{quote(column)} IS NULL")
        else:
            conditions.append(f"{quote(column)} = %s")
            params.append(before)
    sql = f"UPDATE {quote(table.db_table)} SET {', '.join(assignments)} WHERE {' AND '.join(conditions)}"
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return bool(cursor.rowcount == 1)


def _select(table: EncryptedTable) -> tuple[str, str, str]:
    quote = connections[table.using].ops.quote_name
    pk = quote(table.pk_column)
    columns = ", ".join(quote(c) for c in table.columns)
    any_set = " OR ".join(f"{quote(c)} IS NOT NULL" for c in table.columns)
    return f"SELECT {pk}, {columns} FROM {quote(table.db_table)}", pk, f"({any_set})"


def _count(table: EncryptedTable) -> int:
    _sql, _pk, any_set = _select(table)
    quote = connections[table.using].ops.quote_name
    with connections[table.using].cursor() as cursor:
        cursor.execute(f"SELECT COUNT(*) FROM {quote(table.db_table)} WHERE {any_set}")
        row = cursor.fetchone()
    return int(row[0]) if row else 0


def _batches(table: EncryptedTable, batch_size: int) -> Iterator[list[tuple[Any, ...]]]:
    """Rows with at least one encrypted value, ``batch_size`` at a time, by primary key."""
    select, pk, any_set = _select(table)
    last: Any = None
    while True:
        where, params = (f"{any_set} AND {pk} > %s", [last]) if last is not None else (any_set, [])
        with connections[table.using].cursor() as cursor:
            cursor.execute(f"{select} WHERE {where} ORDER BY {pk} LIMIT %s", [*params, batch_size])
            batch = [tuple(row) for row in cursor.fetchall()]
        if not batch:
            return
        yield batch
        last = batch[-1][0]


def _read_row(table: EncryptedTable, pk: Any) -> list[str | None] | None:
    select, pk_column, _any = _select(table)
    with connections[table.using].cursor() as cursor:
        cursor.execute(f"{select} WHERE {pk_column} = %s", [pk])
        row = cursor.fetchone()
    return None if row is None else list(row[1:])
