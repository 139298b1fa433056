"""The Celery app of the test project: ``celery -A tests.celery_app worker``.

Configured from Django settings (``CELERY_*``). Each pytest process uses its
own queue, passed to the workers it starts in ``MANYCHAT_TEST_CELERY_QUEUE``,
so that two test runs sharing one Redis never take each other's tasks.
"""

from __future__ import annotations

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")

QUEUE = os.environ.get("MANYCHAT_TEST_CELERY_QUEUE") or f"manychat_oauth_tests_{os.getpid()}"

app = Celery("manychat_oauth_tests")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.conf.task_default_queue = QUEUE
app.autodiscover_tasks(["manychat_oauth"])
app.set_default()
