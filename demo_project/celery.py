"""Celery app for the demo: ``celery -A demo_project.celery worker`` and ``... beat``.

Needs the ``celery`` extra: ``pip install -e ".[demo,celery]"``.
"""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "demo_project.settings")
app = Celery("demo_project")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
