from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from manychat_oauth.sandbox.accounts import SandboxError, create_api_key, create_page, get_page, revoke_api_keys


class Command(BaseCommand):
    help = "Manage the Manychat sandbox's pages and page API keys (local development and tests only)."

    def add_arguments(self, parser: CommandParser) -> None:
        actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
        page = actions.add_parser("create-page", help="Create a sandbox page.")
        page.add_argument("--name", required=True, help="The page's name, as getInfo reports it.")
        page.add_argument("--page-id", help="Numeric page id (default: a random unused one).")
        page.add_argument("--username", default="", help="The page's username (optional).")
        page.add_argument("--category", default="", help="The page's category (optional).")
        key = actions.add_parser("create-api-key", help="Create a page API key and print it.")
        key.add_argument("--page-id", required=True, help="The page the key belongs to.")
        revoke = actions.add_parser("revoke-api-key", help="Revoke every active API key of a page.")
        revoke.add_argument("--page-id", required=True, help="The page whose keys to revoke.")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            if options["action"] == "create-page":
                page = create_page(
                    options["name"],
                    page_id=options["page_id"],
                    username=options["username"],
                    category=options["category"],
                )
                self.stdout.write(self.style.SUCCESS(f"Created sandbox page {page.name!r} with id {page.page_id}."))
            elif options["action"] == "create-api-key":
                # Only the key on stdout, so scripts can capture it.
                self.stdout.write(create_api_key(get_page(options["page_id"])).key)
            else:
                revoked = revoke_api_keys(get_page(options["page_id"]))
                style = self.style.SUCCESS if revoked else self.style.WARNING
                self.stdout.write(style(f"Revoked {revoked} API key(s) of page {options['page_id']}."))
        except SandboxError as exc:
            raise CommandError(str(exc)) from None
