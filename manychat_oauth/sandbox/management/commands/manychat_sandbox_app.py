"""Play Manychat's App Store in the sandbox: install an app on a page, or uninstall it."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from manychat_oauth.sandbox.app_store import TOKEN_PLACES, EndpointUnreachable, install_app, uninstall_app
from manychat_oauth.sandbox.models import SandboxPage
from manychat_oauth.sandbox.views import default_page


class Command(BaseCommand):
    help = (
        "Install a Manychat App Store app on a sandbox page (POSTing the new App Key to the site's "
        "install endpoint, as Manychat does), or uninstall it."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        actions = parser.add_subparsers(dest="action", required=True, metavar="{install,uninstall}")
        install = actions.add_parser("install", help="Install the app and call the site's install endpoint.")
        install.add_argument("--page-id", help="Sandbox page id (default: the first sandbox page).")
        install.add_argument(
            "--url",
            required=True,
            help="The site's install endpoint, e.g. http://127.0.0.1:8000/manychat/app/install/.",
        )
        install.add_argument("--secret", required=True, help="The shared secret (MANYCHAT_OAUTH_APP_INSTALL_SECRET).")
        install.add_argument("--link-code", required=True, help="The link code shown on the user's connections page.")
        install.add_argument("--app-id", default="sandbox-app", help="The app's id (default: sandbox-app).")
        install.add_argument("--app-version", default="1", help="The app's version (default: 1).")
        install.add_argument(
            "--token-in",
            choices=TOKEN_PLACES,
            default="payload",
            help="Send the App Key in the payload, a header, or both.",
        )
        install.add_argument(
            "--secret-header", help="Header carrying the secret (default: MANYCHAT_OAUTH_APP_INSTALL_SECRET_HEADER)."
        )
        install.add_argument(
            "--token-header", help="Header carrying the App Key (default: MANYCHAT_OAUTH_APP_TOKEN_HEADER)."
        )
        uninstall = actions.add_parser("uninstall", help="Uninstall the app: its keys then answer 500 'exception'.")
        uninstall.add_argument("--page-id", help="Sandbox page id (default: the first sandbox page).")
        uninstall.add_argument("--app-id", help="Only this app (default: every app installed on the page).")

    def handle(self, *args: Any, **options: Any) -> None:
        page = self.page(options.get("page_id"))
        if options["action"] == "uninstall":
            count = uninstall_app(page, app_id=options.get("app_id"))
            if not count:
                raise CommandError(f"No installed app on sandbox page {page.page_id}.")
            self.stdout.write(self.style.SUCCESS(f"Uninstalled {count} app installation(s) from {page}."))
            return
        try:
            call = install_app(
                page,
                url=options["url"],
                secret=options["secret"],
                link_code=options["link_code"],
                app_id=options["app_id"],
                app_version=options["app_version"],
                token_in=options["token_in"],
                secret_header=options.get("secret_header"),
                token_header=options.get("token_header"),
            )
        except EndpointUnreachable as exc:
            raise CommandError(str(exc)) from None
        if not call.ok:
            raise CommandError(
                f"Installed on {page}, but the site answered HTTP {call.status_code}: {call.message or 'no message'}"
            )
        self.stdout.write(self.style.SUCCESS(f"Installed app {call.install.app_id} on {page}: {call.message}"))

    def page(self, page_id: str | None) -> SandboxPage:
        if not page_id:
            return default_page()
        page = SandboxPage.objects.filter(page_id=page_id).first()
        if page is None:
            raise CommandError(f"No sandbox page with id {page_id}.")
        return page
