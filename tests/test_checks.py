from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from django.core.management import call_command
from django.core.management.base import SystemCheckError

from manychat_oauth import checks
from manychat_oauth.conf import app_settings


def ids(messages) -> set[str]:
    return {m.id for m in messages}


def test_default_settings_pass_every_check(settings):
    settings.DEBUG = True  # the test runner turns DEBUG off
    assert checks.check_settings() == []
    assert checks.check_sandbox() == []


def test_missing_client_id_and_secret_are_errors(settings):
    settings.MANYCHAT_OAUTH_CLIENT_ID = None
    del settings.MANYCHAT_OAUTH_CLIENT_SECRET
    found = checks.check_settings()
    assert {"manychat_oauth.E001", "manychat_oauth.E002"} <= ids(found)
    assert all(m.hint for m in found)


def test_check_command_fails_on_error(settings):
    settings.MANYCHAT_OAUTH_CLIENT_ID = ""
    with pytest.raises(SystemCheckError, match="manychat_oauth.E001"):
        call_command("check")


def test_missing_oauth_credentials_can_be_silenced(settings):
    settings.MANYCHAT_OAUTH_CLIENT_ID = ""
    settings.MANYCHAT_OAUTH_CLIENT_SECRET = ""
    settings.SILENCED_SYSTEM_CHECKS = ["manychat_oauth.E001", "manychat_oauth.E002"]
    call_command("check")


@pytest.mark.parametrize("keys", [["nope"], "a-string", [Fernet.generate_key().decode(), "short"]])
def test_malformed_fernet_keys_are_reported_without_the_key(settings, keys):
    settings.MANYCHAT_OAUTH_FERNET_KEYS = keys
    found = [m for m in checks.check_settings() if m.id == "manychat_oauth.E003"]
    assert found
    for message in found:
        assert "short" not in message.msg and "nope" not in message.msg


def test_valid_fernet_keys_pass(settings):
    settings.MANYCHAT_OAUTH_FERNET_KEYS = [Fernet.generate_key().decode(), Fernet.generate_key()]
    assert checks.check_settings() == []


def test_unknown_token_auth_method_is_an_error(settings):
    settings.MANYCHAT_OAUTH_TOKEN_AUTH_METHOD = "private_key_jwt"
    assert "manychat_oauth.E004" in ids(checks.check_settings())


@pytest.mark.parametrize(
    ("name", "value"),
    [("MANYCHAT_OAUTH_HTTP_TIMEOUT", 0), ("MANYCHAT_OAUTH_REFRESH_MARGIN", -1), ("MANYCHAT_OAUTH_STATE_MAX_AGE", "x")],
)
def test_bad_numbers_are_errors(settings, name, value):
    setattr(settings, name, value)
    assert "manychat_oauth.E005" in ids(checks.check_settings())


def test_scopes_must_be_a_list(settings):
    settings.MANYCHAT_OAUTH_SCOPES = "page:read"
    assert "manychat_oauth.E006" in ids(checks.check_settings())


def test_relative_endpoint_is_an_error(settings):
    settings.MANYCHAT_OAUTH_TOKEN_URL = "/oauth/token"
    assert "manychat_oauth.E007" in ids(checks.check_settings())


def test_sandbox_with_debug_off_warns(settings):
    settings.DEBUG = False
    assert ids(checks.check_sandbox()) == {"manychat_oauth.W003"}


def test_deploy_warns_about_derived_keys_http_redirect_and_http_endpoints(settings):
    settings.MANYCHAT_OAUTH_REDIRECT_URI = "http://example.com/manychat/callback/"
    settings.MANYCHAT_OAUTH_TOKEN_URL = "http://example.com/oauth/token"
    assert ids(checks.check_deploy()) == {"manychat_oauth.W001", "manychat_oauth.W002", "manychat_oauth.W004"}


def test_deploy_is_quiet_with_own_keys_and_https(settings):
    settings.MANYCHAT_OAUTH_FERNET_KEYS = [Fernet.generate_key().decode()]
    settings.MANYCHAT_OAUTH_REDIRECT_URI = "https://example.com/manychat/callback/"
    assert checks.check_deploy() == []


def test_check_deploy_command_lists_the_warnings(settings, capsys):
    settings.MANYCHAT_OAUTH_REDIRECT_URI = "http://example.com/cb/"
    call_command("check", "--deploy", "--tag", "security")
    # Django prints deploy warnings on stderr; our ids must be among them.
    err = capsys.readouterr().err
    assert "manychat_oauth.W001" in err and "manychat_oauth.W002" in err


def test_settings_are_read_on_every_access(settings):
    assert app_settings.REFRESH_MARGIN == 600
    settings.MANYCHAT_OAUTH_REFRESH_MARGIN = 5
    assert app_settings.REFRESH_MARGIN == 5


def test_defaults_match_the_contract():
    assert app_settings.AUTHORIZE_URL == "https://manychat.com/oauth/authorize"
    assert app_settings.TOKEN_URL == "https://manychat.com/oauth/token"
    assert app_settings.API_BASE_URL == "https://api.manychat.com"
    assert app_settings.SCOPES == []
    assert app_settings.USE_PKCE is True
    assert app_settings.TOKEN_AUTH_METHOD == "client_secret_post"
    assert app_settings.STATE_MAX_AGE == 600
    assert app_settings.CONNECTED_URL == "manychat_oauth:connections"
    assert app_settings.API_KEY_CHECK_INTERVAL == 86400
    assert app_settings.REDIRECT_URI is None
    assert app_settings.APP_INSTALL_SECRET is None
    assert app_settings.APP_INSTALL_URL is None


ROOT = Path(__file__).resolve().parent.parent

#: What each hint must name so that the reader knows the fix.
DEPLOY_HINTS = {
    "manychat_oauth.W001": "Set MANYCHAT_OAUTH_FERNET_KEYS to your own keys",
    "manychat_oauth.W002": "serve it over https",
    "manychat_oauth.W003": "remove it from INSTALLED_APPS and its URLs in production",
    "manychat_oauth.W004": "use https endpoints",
    "manychat_oauth.W005": "Set MANYCHAT_OAUTH_APP_INSTALL_SECRET",
}


def test_check_deploy_on_production_like_settings_lists_every_warning_with_its_hint():
    """``manage.py check --deploy`` in a subprocess, as an operator runs it, on tests/settings_production.py."""
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings_production"}
    env.pop("MANYCHAT_TEST_SANDBOX_URL", None)
    done = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr  # warnings only: deploys are not blocked
    output = done.stdout + done.stderr
    found = {}
    for match in re.finditer(r"^\?: \((manychat_oauth\.\w+)\) (.+)\n\tHINT: (.+)$", output, re.MULTILINE):
        found[match.group(1)] = match.group(3)
    assert set(found) == set(DEPLOY_HINTS), output
    for check_id, fix in DEPLOY_HINTS.items():
        assert fix in found[check_id], (check_id, found[check_id])


def declared_check_ids() -> set[str]:
    source = (ROOT / "manychat_oauth" / "checks.py").read_text(encoding="utf-8")
    return set(re.findall(r'id="(manychat_oauth\.[EW]\d{3})"', source))


def readme_check_ids() -> set[str]:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("\n## System checks\n", 1)[1].split("\n## ", 1)[0]
    return set(re.findall(r"^\| `(manychat_oauth\.[EW]\d{3})` \|", section, re.MULTILINE))


def test_the_readme_checks_table_lists_exactly_the_ids_in_checks_py():
    declared = declared_check_ids()
    assert len(declared) >= 12  # E001-E007, W001-W005
    assert readme_check_ids() == declared
