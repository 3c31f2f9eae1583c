"""The Celery app of SuperBook: its settings are Django's CELERY_* ones (settings.py),
its tasks are every installed app's tasks.py. Workers and beat run with
`celery -A superbook worker` and `celery -A superbook beat` (prodready.django's celery role)."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "superbook.settings")

app = Celery("superbook")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
