"""Settings for the test suite: SQLite by default, PostgreSQL when DATABASE_URL is set."""

from __future__ import annotations

import os
from pathlib import Path

import environ

BASE_DIR = Path(__file__).resolve().parent
env = environ.Env()

SECRET_KEY = "tests-secret-key-not-for-production-0123456789abcdef"
DEBUG = True
ALLOWED_HOSTS = ["*"]
USE_TZ = True
TIME_ZONE = "UTC"

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "manychat_oauth",
    "manychat_oauth.sandbox",
]
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]
ROOT_URLCONF = "tests.urls"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        # registration/login.html for the login the browser tests go through.
        "DIRS": [BASE_DIR / "templates"],
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
STATIC_URL = "/static/"
LOGIN_URL = "/accounts/login/"
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

if os.environ.get("DATABASE_URL"):
    DATABASES = {"default": env.db("DATABASE_URL")}
    DATABASES["default"].setdefault("TEST", {})
    # One test database per process, so that parallel runs do not collide.
    DATABASES["default"]["TEST"]["NAME"] = f"test_manychat_oauth_{os.getpid()}"
else:
    # A file, not :memory:, so that the live server, threads and subprocesses
    # of the race tests share one database.
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": str(BASE_DIR / "db.sqlite3"),
            "TEST": {"NAME": str(BASE_DIR / f"test_{os.getpid()}.sqlite3")},
            "OPTIONS": {"timeout": 30, "transaction_mode": "IMMEDIATE"},
        }
    }

MANYCHAT_OAUTH_CLIENT_ID = "test-client"
MANYCHAT_OAUTH_CLIENT_SECRET = "test-client-secret-5f2b9c"
MANYCHAT_OAUTH_HTTP_TIMEOUT = float(os.environ.get("MANYCHAT_TEST_HTTP_TIMEOUT", 5))

# Subprocesses started by tests (Celery workers, race workers, commands) reach
# the test process's database and the sandbox served by its live_server
# through these variables.
if os.environ.get("MANYCHAT_TEST_DB_NAME"):
    DATABASES["default"]["NAME"] = os.environ["MANYCHAT_TEST_DB_NAME"]
if os.environ.get("MANYCHAT_TEST_SANDBOX_URL"):
    _sandbox = os.environ["MANYCHAT_TEST_SANDBOX_URL"].rstrip("/")
    MANYCHAT_OAUTH_AUTHORIZE_URL = f"{_sandbox}/oauth/authorize"
    MANYCHAT_OAUTH_TOKEN_URL = f"{_sandbox}/oauth/token"
    MANYCHAT_OAUTH_API_BASE_URL = _sandbox

# Read by tests/celery_app.py (the real-worker tests).
CELERY_BROKER_URL = os.environ.get("MANYCHAT_TEST_BROKER_URL", "redis://127.0.0.1:6379/14")
CELERY_TASK_IGNORE_RESULT = True

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"null": {"class": "logging.NullHandler"}},
    "loggers": {"manychat_oauth": {"handlers": ["null"], "level": "DEBUG"}},
}

# Django 6.1 configures email with MAILERS and deprecates the implicit default
# mailer (RemovedInDjango2028Warning, an error here); Django 5.2 ignores it.
MAILERS = {"default": {"BACKEND": "django.core.mail.backends.locmem.EmailBackend"}}
