"""Demo settings, read from the environment (and an optional .env) with django-environ.

Defaults run on SQLite with the Manychat sandbox, so ``make demo`` needs nothing else.
With MANYCHAT_SANDBOX=off, the MANYCHAT_* variables point the demo at a real
authorization server.
"""

from __future__ import annotations

from pathlib import Path

import environ

BASE_DIR = Path(__file__).resolve().parent.parent
env = environ.Env()
environ.Env.read_env(BASE_DIR / ".env", overwrite=False)

DEBUG = env.bool("DJANGO_DEBUG", default=True)
SECRET_KEY = env.str("DJANGO_SECRET_KEY", default="demo-insecure-secret-key-change-me" if DEBUG else environ.Env.NOTSET)
ALLOWED_HOSTS = env.list("DJANGO_ALLOWED_HOSTS", default=["127.0.0.1", "localhost"])
SITE_URL = env.str("DJANGO_SITE_URL", default="http://127.0.0.1:8000").rstrip("/")

MANYCHAT_SANDBOX = env.bool("MANYCHAT_SANDBOX", default=True)

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "manychat_oauth",
    "demo_project",
]
if MANYCHAT_SANDBOX:
    INSTALLED_APPS.append("manychat_oauth.sandbox")

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]
ROOT_URLCONF = "demo_project.urls"
WSGI_APPLICATION = "demo_project.wsgi.application"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "demo_project" / "templates"],
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
DATABASES = {"default": env.db("DATABASE_URL", default=f"sqlite:///{BASE_DIR / 'demo.sqlite3'}")}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
USE_TZ = True
TIME_ZONE = "UTC"
STATIC_URL = "/static/"
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "home"

# Manychat ------------------------------------------------------------------
_sandbox = f"{SITE_URL}/sandbox/manychat"
MANYCHAT_OAUTH_CLIENT_ID = env.str("MANYCHAT_CLIENT_ID", default="demo-client" if MANYCHAT_SANDBOX else "")
MANYCHAT_OAUTH_CLIENT_SECRET = env.str(
    "MANYCHAT_CLIENT_SECRET", default="demo-client-secret" if MANYCHAT_SANDBOX else ""
)
MANYCHAT_OAUTH_REDIRECT_URI = env.str("MANYCHAT_REDIRECT_URI", default="") or None
MANYCHAT_OAUTH_AUTHORIZE_URL = env.str(
    "MANYCHAT_AUTHORIZE_URL",
    default=f"{_sandbox}/oauth/authorize" if MANYCHAT_SANDBOX else "https://manychat.com/oauth/authorize",
)
MANYCHAT_OAUTH_TOKEN_URL = env.str(
    "MANYCHAT_TOKEN_URL", default=f"{_sandbox}/oauth/token" if MANYCHAT_SANDBOX else "https://manychat.com/oauth/token"
)
MANYCHAT_OAUTH_API_BASE_URL = env.str(
    "MANYCHAT_API_BASE_URL", default=_sandbox if MANYCHAT_SANDBOX else "https://api.manychat.com"
)
MANYCHAT_OAUTH_SCOPES = env.list("MANYCHAT_SCOPES", default=[])
MANYCHAT_OAUTH_APP_INSTALL_SECRET = (
    env.str("MANYCHAT_APP_INSTALL_SECRET", default="demo-install-secret" if MANYCHAT_SANDBOX else "") or None
)
MANYCHAT_OAUTH_APP_INSTALL_URL = env.str("MANYCHAT_APP_INSTALL_URL", default="") or None
_fernet_keys = env.list("MANYCHAT_FERNET_KEYS", default=[])
if _fernet_keys:
    MANYCHAT_OAUTH_FERNET_KEYS = _fernet_keys

CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default="redis://127.0.0.1:6379/0")
CELERY_TASK_IGNORE_RESULT = True
CELERY_BEAT_SCHEDULE = {
    "manychat-refresh-due-tokens": {"task": "manychat_oauth.refresh_due_connections", "schedule": 60.0},
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {"manychat_oauth": {"handlers": ["console"], "level": env.str("MANYCHAT_LOG_LEVEL", default="INFO")}},
}
