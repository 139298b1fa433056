"""The quickstart's settings: a minimal site using django-manychat-oauth.

The documentation includes the marked sections of this file, and
tests/test_docs.py runs `manage.py check --deploy` and `migrate` on it, so the
quickstart cannot drift from what works.
"""

import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
SECRET_KEY = os.environ["DJANGO_SECRET_KEY"]
DEBUG = False
ALLOWED_HOSTS = ["www.example.com"]

# --8<-- [start:installed_apps]
INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "manychat_oauth",
]
# --8<-- [end:installed_apps]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]
ROOT_URLCONF = "mysite.urls"
# --8<-- [start:templates]
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],  # templates/registration/login.html
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
# --8<-- [end:templates]
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("QUICKSTART_DB", str(BASE_DIR / "db.sqlite3")),
    }
}
USE_TZ = True
STATIC_URL = "static/"

# The settings Django's own deployment checklist asks for.
SECURE_SSL_REDIRECT = True
SECURE_HSTS_SECONDS = 31536000
SECURE_HSTS_INCLUDE_SUBDOMAINS = True
SECURE_HSTS_PRELOAD = True
SESSION_COOKIE_SECURE = True
CSRF_COOKIE_SECURE = True

# --8<-- [start:manychat]
LOGIN_URL = "login"  # the app's pages require a logged-in user
LOGIN_REDIRECT_URL = "manychat_oauth:connections"

# From the app you registered with the authorization server (Manychat).
MANYCHAT_OAUTH_CLIENT_ID = os.environ["MANYCHAT_CLIENT_ID"]
MANYCHAT_OAUTH_CLIENT_SECRET = os.environ["MANYCHAT_CLIENT_SECRET"]
# Keys that encrypt the stored tokens, newest first, comma-separated in the
# environment. Make one with:
#   python -c "from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())"
MANYCHAT_OAUTH_FERNET_KEYS = os.environ["MANYCHAT_FERNET_KEYS"].split(",")
# The URL registered with the authorization server (https in production).
MANYCHAT_OAUTH_REDIRECT_URI = "https://www.example.com/manychat/callback/"
# The URLs above include the endpoint Manychat calls after an App Store install
# (manychat/app/install/). This site has no App Store app, so it leaves
# MANYCHAT_OAUTH_APP_INSTALL_SECRET unset: the endpoint refuses every call, and
# check W005, which warns about exactly that, is silenced. If you publish an
# app in Manychat's App Store, set the secret instead and remove this line.
SILENCED_SYSTEM_CHECKS = ["manychat_oauth.W005"]
# --8<-- [end:manychat]
