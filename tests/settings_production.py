"""A production-like configuration with every mistake the deploy checks exist for.

DEBUG off, the sandbox still installed, no ``MANYCHAT_OAUTH_FERNET_KEYS`` (keys
derived from ``SECRET_KEY``), an http redirect URI and token endpoint, and the
App install endpoint routed without its shared secret. Used by
``tests/test_checks.py`` to run ``manage.py check --deploy`` for real.
"""

from __future__ import annotations

from .settings import *  # noqa: F403

DEBUG = False
ALLOWED_HOSTS = ["example.com"]
MANYCHAT_OAUTH_REDIRECT_URI = "http://example.com/manychat/callback/"
MANYCHAT_OAUTH_TOKEN_URL = "http://manychat.example/oauth/token"
# Django 6.1's deploy checks refuse development mail backends (mail.E001);
# this is not what these tests are about.
MAILERS = {"default": {"BACKEND": "django.core.mail.backends.smtp.EmailBackend"}}
