from __future__ import annotations

import json
import sys
import threading
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser, OutputWrapper

from manychat_oauth.health import check_due_connections
from manychat_oauth.refresh import Outcome, RefreshResult, configuration_problem, iter_due, refresh_due_connections

#: Exit status when the configuration is wrong (``invalid_client``, missing credentials).
EXIT_CONFIG_ERROR = 2


class Command(BaseCommand):
    help = (
        "Refresh the OAuth tokens of Manychat connections that expire soon. Safe to run on several hosts at once. "
        "Exits 0 when every attempted refresh succeeded, 1 when any failed or needs re-authorization, "
        "2 on a configuration error."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--all",
            action="store_true",
            help="Refresh every active OAuth connection, ignoring margin and backoff "
            "(never those that need re-authorization or were disconnected).",
        )
        parser.add_argument(
            "--connection", type=int, nargs="+", metavar="ID", help="Refresh only these connection ids."
        )
        parser.add_argument(
            "--margin",
            type=float,
            metavar="SECONDS",
            help="Refresh tokens expiring within this many seconds (default MANYCHAT_OAUTH_REFRESH_MARGIN), "
            "capped to half of each token's lifetime.",
        )
        parser.add_argument("--concurrency", type=int, default=8, metavar="N", help="Refresh on N threads (default 8).")
        parser.add_argument(
            "--dry-run", action="store_true", help="List what would be refreshed and why; change nothing."
        )
        parser.add_argument(
            "--enqueue",
            action="store_true",
            help="Queue one Celery task per due connection instead of refreshing here.",
        )
        parser.add_argument("--json", action="store_true", help="Print the result as one JSON object on stdout.")

    def handle(self, *args: Any, **options: Any) -> None:
        if options["concurrency"] < 1:
            raise CommandError("--concurrency must be at least 1.")
        if options["margin"] is not None and options["margin"] < 0:
            raise CommandError("--margin must not be negative.")
        if options["all"] and options["connection"]:
            raise CommandError("Use either --all or --connection, not both.")
        selection = {"margin": options["margin"], "force": options["all"], "connection_ids": options["connection"]}
        if options["dry_run"]:
            return self.dry_run(selection, as_json=options["json"])
        if options["enqueue"]:
            return self.enqueue(selection, as_json=options["json"])
        progress = Progress(self.stderr) if self.stderr.isatty() and not options["json"] else None
        run = refresh_due_connections(concurrency=options["concurrency"], on_result=progress, **selection)
        if progress:
            progress.done()
        checks = check_due_connections(force=options["all"], connection_ids=options["connection"])
        exit_code = run.exit_code or checks.exit_code
        if options["json"]:
            self.stdout.write(json.dumps({**run.as_dict(), "exit_code": exit_code, "health_checks": checks.as_dict()}))
        else:
            for problem in run.problems:
                reason = f": {problem.reason}" if problem.outcome is Outcome.FAILED else ""
                self.stdout.write(
                    self.style.WARNING(
                        f"connection {problem.connection_id}: {problem.outcome} ({problem.error_code}){reason}"
                    )
                )
            for check in checks.problems:
                self.stdout.write(self.style.WARNING(f"connection {check.connection_id}: check {check.error_code}"))
            check_style = self.style.SUCCESS if checks.exit_code == 0 else self.style.WARNING
            self.stdout.write(check_style(f"health checks: {checks.summary()}"))
            # The refresh summary stays the last line, for scripts that read it.
            style = self.style.SUCCESS if run.exit_code == 0 else self.style.WARNING
            self.stdout.write(style(run.summary()))
        if run.config_error:
            self.stderr.write(
                self.style.ERROR(
                    f"Stopped, no connection was marked: {run.config_error} "
                    "Check MANYCHAT_OAUTH_CLIENT_ID, MANYCHAT_OAUTH_CLIENT_SECRET and MANYCHAT_OAUTH_TOKEN_URL."
                )
            )
        if exit_code:
            sys.exit(exit_code)

    def dry_run(self, selection: dict[str, Any], *, as_json: bool) -> None:
        rows = [{"connection_id": row.pk, "reason": reason} for row, reason in iter_due(**selection)]
        problem = configuration_problem() if rows else None
        if as_json:
            self.stdout.write(json.dumps({"dry_run": True, "would_refresh": rows, "config_error": problem}))
        else:
            for row in rows:
                self.stdout.write(f"would refresh connection {row['connection_id']}: {row['reason']}")
            self.stdout.write(f"{len(rows)} connection(s) would be refreshed (dry run, nothing changed).")
        if problem:
            self.stderr.write(self.style.ERROR(f"Refreshing would stop at once: {problem}"))
            sys.exit(EXIT_CONFIG_ERROR)

    def enqueue(self, selection: dict[str, Any], *, as_json: bool) -> None:
        try:
            from manychat_oauth.tasks import check_due_connections_task, enqueue_due_connections
        except ImportError as exc:
            raise CommandError("--enqueue needs Celery: pip install 'django-manychat-oauth[celery]'.") from exc
        queued = enqueue_due_connections(**selection)
        check_due_connections_task.delay()
        if as_json:
            self.stdout.write(json.dumps({"enqueued": queued, "health_checks_enqueued": True}))
        else:
            self.stdout.write(self.style.SUCCESS(f"Queued {queued} refresh task(s) and the health checks."))


class Progress:
    """A one-line progress counter on a terminal, fed from the worker threads."""

    def __init__(self, stream: OutputWrapper) -> None:
        self.stream = stream
        self.counts = dict.fromkeys(Outcome, 0)
        self._lock = threading.Lock()

    def __call__(self, result: RefreshResult) -> None:
        with self._lock:
            self.counts[result.outcome] += 1
            done = sum(self.counts.values())
            if done % 10 == 0 or result.outcome is not Outcome.REFRESHED:
                self._draw(done)

    def _draw(self, done: int) -> None:
        parts = " ".join(f"{outcome.value}={count}" for outcome, count in self.counts.items() if count)
        self.stream.write(f"\r{done} processed  {parts}", ending="")
        self.stream.flush()

    def done(self) -> None:
        with self._lock:
            done = sum(self.counts.values())
            if done:
                self._draw(done)
                self.stream.write("")
