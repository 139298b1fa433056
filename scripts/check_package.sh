#!/usr/bin/env bash
# Packaging checks: build the sdist and the wheel, check their metadata, check what
# they contain, then install the wheel into a clean venv and run `manage.py check`
# (and migrate, and load every template) of a throwaway project that uses the app,
# outside the source tree. Proves nothing the app needs lives only in this repository.
#
# Usage: scripts/check_package.sh          (PYTHON: the venv with build+twine, default .venv/bin/python;
#                                           BASE_PYTHON: the interpreter for the clean venv, default python3)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PYTHON=${PYTHON:-.venv/bin/python}
BASE_PYTHON=${BASE_PYTHON:-python3}
step() { printf '\n--> %s\n' "$*"; }
fail() { printf 'FAIL: %s\n' "$*" >&2; exit 1; }

work=$(mktemp -d "${TMPDIR:-/tmp}/manychat-package-check.XXXXXX")
trap 'rm -rf "$work"' EXIT

step "Build sdist and wheel"
# From a copy without build leftovers: setuptools adds every file listed in a stale
# *.egg-info/SOURCES.txt (left by `pip install -e .`), which would hide a file that
# MANIFEST.in no longer includes.
rm -rf dist build
mkdir "$work/src"
tar --exclude=./.git --exclude=./.venv --exclude=./.nox --exclude=./build --exclude=./dist \
  --exclude='*.egg-info' --exclude=__pycache__ --exclude=./site -cf - . | tar -xf - -C "$work/src"
"$PYTHON" -m build --quiet --outdir "$ROOT/dist" "$work/src" >"$work/build.log" 2>&1 || { cat "$work/build.log"; fail "python -m build failed"; }
if grep -q "would be ignored\|is absent from the \`packages\` configuration" "$work/build.log"; then
  grep -B2 -A4 "would be ignored" "$work/build.log" | head -20
  fail "setuptools would leave files out of the wheel"
fi
ls dist

step "twine check --strict"
"$PYTHON" -m twine check --strict dist/*

step "Contents of the wheel and the sdist"
"$PYTHON" - "$ROOT" <<'EOF'
import sys
import tarfile
import zipfile
from pathlib import Path

root = Path(sys.argv[1])
(wheel,) = (root / "dist").glob("*.whl")
(sdist,) = (root / "dist").glob("*.tar.gz")
in_wheel = set(zipfile.ZipFile(wheel).namelist())
with tarfile.open(sdist) as tar:
    in_sdist = {name.split("/", 1)[1] for name in tar.getnames() if "/" in name}

# Every file of the package in the source tree must be in both (a new template,
# migration or data file that the build configuration misses shows up here).
source = {
    str(path.relative_to(root))
    for path in (root / "manychat_oauth").rglob("*")
    if path.is_file() and "__pycache__" not in path.parts and path.suffix not in {".pyc", ".pyo"}
}
problems = [f"wheel lacks {name}" for name in sorted(source - in_wheel)]
problems += [f"sdist lacks {name}" for name in sorted(source - in_sdist)]

required = [
    "manychat_oauth/py.typed",
    "manychat_oauth/migrations/0001_initial.py",
    "manychat_oauth/sandbox/migrations/0001_initial.py",
]
problems += [f"wheel lacks {name}" for name in required if name not in in_wheel]
for prefix in ("manychat_oauth/templates/manychat_oauth/", "manychat_oauth/sandbox/templates/manychat_sandbox/"):
    if not any(name.startswith(prefix) and name.endswith(".html") for name in in_wheel):
        problems.append(f"wheel has no templates under {prefix}")

for name in in_wheel:
    top = name.split("/", 1)[0]
    if top in {"tests", "demo_project", "benchmarks", "docs", "scripts"} or "__pycache__" in name:
        problems.append(f"wheel ships {name}")
    elif not (top == "manychat_oauth" or top.endswith(".dist-info")):
        problems.append(f"wheel ships an unexpected top-level entry: {name}")
for name in ("README.md", "CHANGELOG.md", "LICENSE", "setup.cfg", "pyproject.toml"):
    if name not in in_sdist:
        problems.append(f"sdist lacks {name}")

from email.parser import Parser

metadata = Parser().parsestr(zipfile.ZipFile(wheel).read(next(n for n in in_wheel if n.endswith(".dist-info/METADATA"))).decode())
try:
    from trove_classifiers import classifiers as known
except ImportError:  # the dev extra installs it; without it only this part is skipped
    known = None
if known is not None:
    problems += [f"unknown classifier: {c}" for c in metadata.get_all("Classifier", []) if c not in known]
print("Requires-Python:", metadata["Requires-Python"])
print("Classifiers:", ", ".join(c for c in metadata.get_all("Classifier", []) if "Django ::" in c or "Python :: 3." in c))

if problems:
    print("\n".join(problems))
    sys.exit(1)
print(f"{wheel.name}: {len(in_wheel)} files, {len(source)} package files present; sdist complete")
EOF

step "Install the wheel into a clean venv"
"$BASE_PYTHON" -m venv "$work/venv"
"$work/venv/bin/python" -m pip install --quiet --disable-pip-version-check "$ROOT"/dist/*.whl

step "A throwaway project that uses the installed app"
mkdir -p "$work/site/throwaway"
touch "$work/site/throwaway/__init__.py"
cat >"$work/site/throwaway/settings.py" <<'EOF'
from cryptography.fernet import Fernet

SECRET_KEY = "package-check-only"
DEBUG = True
ALLOWED_HOSTS = ["testserver"]
INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "manychat_oauth",
    "manychat_oauth.sandbox",
]
MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]
ROOT_URLCONF = "throwaway.urls"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": "throwaway.sqlite3"}}
USE_TZ = True
LOGIN_URL = "/admin/login/"
MANYCHAT_OAUTH_CLIENT_ID = "throwaway-client"
MANYCHAT_OAUTH_CLIENT_SECRET = "throwaway-secret"
MANYCHAT_OAUTH_FERNET_KEYS = [Fernet.generate_key().decode()]
MANYCHAT_OAUTH_APP_INSTALL_SECRET = "throwaway-install-secret"
EOF
cat >"$work/site/throwaway/urls.py" <<'EOF'
from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("admin/", admin.site.urls),
    path("manychat/", include("manychat_oauth.urls")),
    path("sandbox/manychat/", include("manychat_oauth.sandbox.urls")),
]
EOF
cat >"$work/site/manage.py" <<'EOF'
import os
import sys

if __name__ == "__main__":
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "throwaway.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)
EOF

cd "$work/site"
export PYTHONPATH="$work/site"   # the throwaway project only; never the source tree
export PYTHONWARNINGS=error::DeprecationWarning
py="$work/venv/bin/python"
"$py" - "$ROOT" <<'EOF'
import sys
from pathlib import Path

import manychat_oauth

location = Path(manychat_oauth.__file__).resolve()
assert Path(sys.argv[1]).resolve() not in location.parents, f"imported from the source tree: {location}"
print(f"manychat_oauth {manychat_oauth.__version__} from {location.parent}")
EOF
"$py" manage.py check --fail-level WARNING
"$py" manage.py migrate --noinput --verbosity 0
"$py" manage.py makemigrations --check --dry-run manychat_oauth manychat_sandbox
"$py" manage.py shell --no-imports -c '
from pathlib import Path

import manychat_oauth
from django.template.loader import get_template
from django.test import Client
from django.urls import reverse

names = sorted(
    str(p.relative_to(t)) for t in Path(manychat_oauth.__file__).parent.rglob("templates") for p in t.rglob("*.html")
)
for name in names:
    get_template(name)
print(f"{len(names)} templates load from the installed package")
for url in ("manychat_oauth:connect", "manychat_oauth:connections"):
    answer = Client().get(reverse(url))
    assert answer.status_code == 302, (url, answer.status_code)
print("views answer (login required)")
'
printf '\nPackage checks passed.\n'
