from __future__ import annotations

import sys
from typing import Any, TextIO

from django.core.exceptions import ImproperlyConfigured
from django.core.management.base import BaseCommand, CommandError, CommandParser

from manychat_oauth.keys import DEFAULT_BATCH_SIZE, RotationReport, rotate_keys

#: Primary keys listed in the error message; the rest are counted.
MAX_LISTED = 50


class Command(BaseCommand):
    help = (
        "Re-encrypt every stored Manychat token with the newest key in MANYCHAT_OAUTH_FERNET_KEYS. "
        "Safe to interrupt and to run again."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--batch-size",
            type=int,
            default=DEFAULT_BATCH_SIZE,
            metavar="N",
            help=f"Rows read and committed per batch (default {DEFAULT_BATCH_SIZE}).",
        )
        parser.add_argument("--dry-run", action="store_true", help="Count what would be re-encrypted; change nothing.")

    def handle(self, *args: Any, **options: Any) -> None:
        if options["batch_size"] < 1:
            raise CommandError("--batch-size must be at least 1.")
        progress = Progress(sys.stderr) if sys.stderr.isatty() else None
        try:
            report = rotate_keys(batch_size=options["batch_size"], dry_run=options["dry_run"], on_progress=progress)
        except ImproperlyConfigured as exc:
            raise CommandError(str(exc)) from None
        finally:
            if progress is not None:
                progress.done()
        style = self.style.SUCCESS if report.ok else self.style.WARNING
        self.stdout.write(style(report.summary()))
        if report.dry_run:
            self.stdout.write("Dry run: nothing was changed.")
        if report.undecryptable:
            raise CommandError(undecryptable_message(report))
        if report.contended:
            raise CommandError(
                f"{report.contended} row(s) kept changing while they were re-encrypted. Run the command again."
            )


def undecryptable_message(report: RotationReport) -> str:
    listed = ", ".join(f"{label} pk={pk}" for label, pk in report.undecryptable[:MAX_LISTED])
    more = len(report.undecryptable) - MAX_LISTED
    if more > 0:
        listed += f" and {more} more"
    return (
        f"{len(report.undecryptable)} row(s) could not be decrypted with any configured key and were left "
        f"unchanged: {listed}. Put the key they were written with back in MANYCHAT_OAUTH_FERNET_KEYS "
        "(after the newest key) and run the command again, or have those users connect again."
    )


class Progress:
    """A one-line progress bar on a terminal (stderr)."""

    WIDTH = 30

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.shown = False

    def __call__(self, done: int, total: int) -> None:
        filled = self.WIDTH * done // total if total else self.WIDTH
        percent = 100 * done // total if total else 100
        self.stream.write(f"\r[{'#' * filled}{'.' * (self.WIDTH - filled)}] {done}/{total} rows ({percent}%)")
        self.stream.flush()
        self.shown = True

    def done(self) -> None:
        if self.shown:
            self.stream.write("\n")
            self.stream.flush()
