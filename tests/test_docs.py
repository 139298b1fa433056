"""The documentation site stays true: its examples run, and its reference pages list everything."""

from __future__ import annotations

import importlib
import os
import re
import runpy
import subprocess
import sys
from pathlib import Path

import pytest
import requests
from cryptography.fernet import Fernet
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from django.dispatch import Signal

from manychat_oauth import signals
from manychat_oauth.conf import Settings
from manychat_oauth.exceptions import TokenDecryptionError
from manychat_oauth.fields import derive_key
from manychat_oauth.models import ManychatConnection
from manychat_oauth.refresh import Outcome, refresh_connection
from manychat_oauth.sandbox.faults import clear_faults
from manychat_oauth.sandbox.models import SandboxFault, SandboxPage

from .conftest import start_flow

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
QUICKSTART = DOCS / "examples" / "quickstart"
PACKAGE = ROOT / "manychat_oauth"


def page(name: str) -> str:
    return (DOCS / name).read_text()


def run_quickstart(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "PYTHONPATH": str(QUICKSTART),
        "DJANGO_SETTINGS_MODULE": "mysite.settings",
        "QUICKSTART_DB": str(tmp_path / "quickstart.sqlite3"),
        "DJANGO_SECRET_KEY": Fernet.generate_key().decode() * 2,
        "MANYCHAT_CLIENT_ID": "my-client-id",
        "MANYCHAT_CLIENT_SECRET": "my-client-secret",
        "MANYCHAT_FERNET_KEYS": f"{Fernet.generate_key().decode()},{Fernet.generate_key().decode()}",
    }
    env.pop("DATABASE_URL", None)
    return subprocess.run(
        [sys.executable, str(QUICKSTART / "manage.py"), *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_quickstart_site_passes_the_deploy_checks_and_migrates(tmp_path):
    check = run_quickstart(tmp_path, "check", "--deploy", "--fail-level", "WARNING")
    assert check.returncode == 0, check.stdout + check.stderr
    assert "no issues" in check.stdout
    migrate = run_quickstart(tmp_path, "migrate", "--noinput")
    assert migrate.returncode == 0, migrate.stdout + migrate.stderr
    assert "manychat_oauth" in migrate.stdout


QUICKSTART_VISIT = """
from django.contrib.auth import get_user_model
from django.test import Client

get_user_model().objects.create_user("alice", password="a long passphrase")
browser = Client(HTTP_HOST="www.example.com")
first = browser.get("/manychat/connections/", secure=True)
login = first["Location"]
form = browser.get(login, secure=True)
logged_in = browser.post(login, {"username": "alice", "password": "a long passphrase"}, secure=True)
page = browser.get(logged_in["Location"], secure=True)
print("VISIT", first.status_code, login, form.status_code, logged_in.status_code, logged_in["Location"],
      page.status_code, "Connect with Manychat" in page.content.decode())
"""


def test_quickstart_site_logs_a_visitor_in_and_shows_the_connect_button(tmp_path):
    migrate = run_quickstart(tmp_path, "migrate", "--noinput")
    assert migrate.returncode == 0, migrate.stdout + migrate.stderr
    visit = run_quickstart(tmp_path, "shell", "-c", QUICKSTART_VISIT)
    assert visit.returncode == 0, visit.stdout + visit.stderr
    (line,) = [line for line in visit.stdout.splitlines() if line.startswith("VISIT ")]
    assert line.split()[1:] == [
        "302",
        "/accounts/login/?next=/manychat/connections/",
        "200",
        "302",
        "/manychat/connections/",
        "200",
        "True",
    ]


def test_quickstart_api_call_reads_the_connected_page(sandbox, user, user_client):
    connect(sandbox, user, user_client)
    sys.path.insert(0, str(QUICKSTART))
    try:
        usage = importlib.import_module("mysite.manychat")
    finally:
        sys.path.remove(str(QUICKSTART))
    expected = SandboxPage.objects.get()
    info = usage.page_info(user, expected.page_id)
    assert info["name"] == expected.name
    assert str(info["id"]) == expected.page_id


def connect(sandbox, user, user_client) -> ManychatConnection:
    query = sandbox.consent(start_flow(user_client))
    assert user_client.get("/manychat/callback/", query).status_code == 302
    return ManychatConnection.objects.get(user=user)


def test_signals_example_mails_the_user_when_a_refresh_token_is_refused(sandbox, user, user_client, mailoutbox):
    connection = connect(sandbox, user, user_client)
    ManychatConnection.objects.filter(pk=connection.pk).update(refresh_token="sbx_rt_unknown-to-the-sandbox")
    # Keep the module's namespace: receivers are weak references, as in a real
    # project where the module stays imported.
    example = runpy.run_path(str(DOCS / "examples" / "signals_receiver.py"))
    try:
        result = refresh_connection(connection.pk, force=True)
    finally:
        signals.reauth_required.disconnect(sender=ManychatConnection, dispatch_uid="ask_the_user_to_reconnect")
    assert result.outcome is Outcome.REAUTH_REQUIRED
    (mail,) = mailoutbox
    assert mail.to == ["alice@example.com"]
    assert "our access to Sandbox Coffee Shop" in mail.body
    assert connection.access_token not in mail.body
    assert example["ask_the_user_to_reconnect"].__name__ == "ask_the_user_to_reconnect"


def test_sandbox_faults_example_fails_the_endpoints_in_order(sandbox, settings):
    runpy.run_path(str(DOCS / "examples" / "sandbox_faults.py"))
    try:
        assert SandboxFault.objects.count() == 5
        # Only the quick ones are played here; the latency faults are left unused.
        answers = [requests.post(f"{sandbox.base}/oauth/token", data={}, timeout=10) for _ in range(3)]
        assert [a.status_code for a in answers] == [503, 503, 429]
        assert answers[2].headers["Retry-After"] == "120"
        info = requests.get(f"{sandbox.base}/fb/page/getInfo", timeout=10)
        assert info.status_code == 502
        assert info.text == "<html>Bad gateway</html>"
    finally:
        clear_faults()


# --8<-- [start:check_test]
def test_missing_client_id_fails_the_checks(settings):
    settings.MANYCHAT_OAUTH_CLIENT_ID = None
    with pytest.raises(SystemCheckError, match="manychat_oauth.E001"):
        call_command("check")


# --8<-- [end:check_test]


def test_moving_from_derived_keys_keeps_stored_tokens_readable(user, settings):
    settings.MANYCHAT_OAUTH_FERNET_KEYS = None
    connection = ManychatConnection.objects.create(user=user, page_id="7", access_token="written-with-derived-key")
    new_key = Fernet.generate_key().decode()
    settings.MANYCHAT_OAUTH_FERNET_KEYS = [new_key, derive_key(settings.SECRET_KEY).decode()]
    assert ManychatConnection.objects.get(pk=connection.pk).access_token == "written-with-derived-key"
    settings.MANYCHAT_OAUTH_FERNET_KEYS = [new_key]
    with pytest.raises(TokenDecryptionError, match="Could not decrypt"):
        ManychatConnection.objects.get(pk=connection.pk)


def test_pages_include_the_tested_files():
    for name, snippet in (
        ("quickstart.md", "docs/examples/quickstart/mysite/settings.py:installed_apps"),
        ("quickstart.md", "docs/examples/quickstart/mysite/settings.py:manychat"),
        ("quickstart.md", "docs/examples/quickstart/mysite/settings.py:templates"),
        ("quickstart.md", "docs/examples/quickstart/templates/registration/login.html"),
        ("quickstart.md", "docs/examples/quickstart/mysite/urls.py:urls"),
        ("quickstart.md", "docs/examples/quickstart/mysite/manychat.py:usage"),
        ("signals.md", "docs/examples/signals_receiver.py:receiver"),
        ("sandbox.md", "docs/examples/sandbox_faults.py:faults"),
        ("checks.md", "tests/test_docs.py:check_test"),
    ):
        assert f'--8<-- "{snippet}"' in page(name)


def test_every_system_check_id_is_documented():
    ids = set()
    for path in PACKAGE.rglob("*.py"):
        ids.update(re.findall(r"manychat_oauth\.[EW]\d{3}", path.read_text()))
    assert ids, "no check ids found"
    documented = set(re.findall(r"manychat_oauth\.[EW]\d{3}", page("checks.md")))
    assert sorted(ids - documented) == []


def test_every_setting_is_documented():
    names = {f"MANYCHAT_OAUTH_{name}" for name, value in vars(Settings).items() if isinstance(value, property)}
    assert len(names) >= 17
    reference = page("settings.md")
    assert sorted(name for name in names if f"`{name}`" not in reference) == []


def test_every_management_command_is_documented():
    commands = {path.stem for path in PACKAGE.rglob("management/commands/*.py") if path.stem != "__init__"}
    assert "manychat_refresh_tokens" in commands
    reference = page("commands.md")
    assert sorted(name for name in commands if f"`{name}" not in reference) == []


def test_every_signal_is_documented():
    names = {name for name, value in vars(signals).items() if isinstance(value, Signal)}
    assert len(names) >= 4
    reference = page("signals.md")
    assert sorted(name for name in names if f"`{name}`" not in reference) == []


def stated_versions() -> tuple[set[str], set[str]]:
    """(Python versions, Django versions) named by setup.cfg's classifiers."""
    text = (ROOT / "setup.cfg").read_text()
    pythons = set(re.findall(r"Programming Language :: Python :: (3\.\d+)", text))
    djangos = set(re.findall(r"Framework :: Django :: (\d+\.\d+)", text))
    return pythons, djangos


def test_classifiers_state_exactly_the_nox_matrix():
    matrix = re.findall(r'Target\(python="(3\.\d+)", django="Django>=(\d+\.\d+),<', (ROOT / "noxfile.py").read_text())
    assert matrix, "no Target(...) found in noxfile.py"
    assert stated_versions() == ({python for python, _ in matrix}, {django for _, django in matrix})


@pytest.mark.parametrize("document", ["README.md", "docs/development.md"])
def test_supported_versions_are_stated_as_in_the_classifiers(document):
    text = (ROOT / document).read_text()
    section = text[text.index("## Supported versions") :]
    pythons, djangos = stated_versions()
    for python in pythons:
        assert f"Python {python}" in section
    for django in djangos:
        assert f"Django {django}" in section
