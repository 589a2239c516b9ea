"""The example site's Celery app: tasks run inside the tenant that sent them.

Start a worker with ``CELERY_BROKER_URL=redis://127.0.0.1:6379/0 celery -A
finance_site worker`` from ``example_project/``; without a broker the demo
runs its task in-process.
"""

import os

from celery import Celery

from tenant_schema.celery import install

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "finance_site.settings")

app = Celery("finance_site")
install(app)  # before any task is created: every task runs in the tenant that sent it
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
