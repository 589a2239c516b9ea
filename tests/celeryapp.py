"""The Celery app of tests/test_celery.py, whose worker is a real process: ``celery -A tests.celeryapp worker``.

The broker and the result backend are the Redis ``./run test`` starts
(``TENANT_SCHEMA_REDIS_URL``), on their own database number; each test run
has its own queue (``TENANT_SCHEMA_CELERY_QUEUE``, else named after this
process), so runs sharing a Redis never take each other's tasks. The worker
process is given the test run's registry in ``TENANT_SCHEMA_CELERY_REGISTRY``
(the pytest process's test database), as tests/tenantapp/helpers.py's
child processes are.

The app is built without Celery's Django fixup (``fixups=[]``): the fixup
closes idle connections after each task by itself (``CONN_MAX_AGE``), which
would hide whether ``tenant_schema.celery`` releases the tenant's. The base
class stays Django's (``DjangoTask``), as the fixup would make it.
"""

from __future__ import annotations

import os
import urllib.parse

if os.environ.get("TENANT_SCHEMA_CELERY_REGISTRY"):  # the worker process
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
    import django
    from django.conf import settings

    settings.DATABASES["default"]["NAME"] = os.environ["TENANT_SCHEMA_CELERY_REGISTRY"]
    django.setup()

import redis
from celery import Celery
from django.db import connections

import tenant_schema.celery
from tenant_schema.context import current_tenant
from tenant_schema.databases import open_tenant_connections

#: The Redis database number the broker and the results use (the cache tests use others).
REDIS_DB = 3
REDIS_URL = urllib.parse.urlsplit(os.environ.get("TENANT_SCHEMA_REDIS_URL") or "redis://127.0.0.1:6379")._replace(
    path=f"/{REDIS_DB}"
)
REDIS_URL = urllib.parse.urlunsplit(REDIS_URL)
QUEUE = os.environ.get("TENANT_SCHEMA_CELERY_QUEUE") or f"tenant-schema-tests-{os.getpid()}"

app = Celery("tests", broker=REDIS_URL, backend=REDIS_URL, fixups=[], task_cls="celery.contrib.django.task:DjangoTask")
app.conf.update(
    task_default_queue=QUEUE,
    result_extended=True,  # results keep the request's retries: a retry storm would show
    result_expires=600,
    worker_prefetch_multiplier=1,
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
)
tenant_schema.celery.install(app)


def redis_client() -> redis.Redis:
    return redis.Redis.from_url(REDIS_URL, socket_timeout=10)


def where_am_i() -> dict:
    """The tenant current in the worker, and what it holds of tenant-schema's connections."""
    tenant = current_tenant()
    return {
        "tenant": tenant.slug if tenant is not None else None,
        "open_connections": open_tenant_connections(),
        "tenant_aliases": sorted(alias for alias in connections.settings if alias.startswith("tenant")),
    }


@app.task
def where() -> dict:
    return where_am_i()


@app.task
def add_note(title: str) -> dict:
    """Write a ``Note`` to the current tenant; what this tenant holds afterwards."""
    from tests.tenantapp.models import Note

    Note.objects.create(title=title)
    return {**where_am_i(), "notes": list(Note.objects.order_by("pk").values_list("title", flat=True))}


@app.task
def fail_in_tenant() -> None:
    from tests.tenantapp.models import Note

    Note.objects.count()  # opens the tenant's connection
    raise RuntimeError("the task failed on purpose")


@app.task(bind=True, max_retries=3)
def retry_once(self) -> dict:
    from tests.tenantapp.models import Note

    Note.objects.count()  # opens the tenant's connection
    if self.request.retries == 0:
        raise self.retry(countdown=0)
    return {**where_am_i(), "retries": self.request.retries, "headers": self.request.headers}


@app.task(autoretry_for=(Exception,), max_retries=5, default_retry_delay=0)
def record(key: str) -> str | None:
    """Push the current tenant's slug ("" for none) onto the Redis list ``key``: proof the body ran, and where."""
    tenant = current_tenant()
    redis_client().rpush(key, tenant.slug if tenant is not None else "")
    return tenant.slug if tenant is not None else None


@app.task
def collect(results: list) -> list:
    """A chord's callback: the tenants of its header tasks, and its own."""
    return [result["tenant"] for result in results] + [where_am_i()["tenant"]]
