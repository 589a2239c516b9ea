"""The django-tenants side of ``./run bench``: a worker process answering the orchestrator's commands.

Started by ``_harness.Run.dt_worker`` with ``DJANGO_SETTINGS_MODULE=
django_tenants_side.settings``, ``BENCH_DT_DATABASE`` (the run's own
database, created here if missing and dropped by the run's clean-up) and
``BENCH_APP_VERSION`` (the state of ``benchapp``). Every command times its
own work and returns seconds; nothing here is a test.
"""

from __future__ import annotations

import gc
import os
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent
if str(BENCH) not in sys.path:  # PYTHONPATH (set by _harness.Run.env) has it, and the code under test
    sys.path.insert(0, str(BENCH))

from _harness import alternate, pg_connect, rss_mib, serve  # noqa: E402

FLEET_PREFIX = "fleet_"
DOMAIN = "bench.test"


def hello() -> dict:
    name = os.environ["BENCH_DT_DATABASE"]
    with pg_connect() as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone():
            conn.execute(f'CREATE DATABASE "{name}"')
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate_schemas", shared=True, interactive=False, verbosity=0)
    from django_tenants_side.dt_shared.models import Client

    if not Client.objects.filter(schema_name="public").exists():
        Client(schema_name="public", name="public").save(verbosity=0)
    import benchapp

    return {"pid": os.getpid(), "version": benchapp.VERSION}


def _new_tenant(schema: str):
    """What creating a tenant is in django-tenants: save the tenant (schema + migrate_schemas) and its domain."""
    from django_tenants_side.dt_shared.models import Client, Domain

    client = Client(schema_name=schema, name=schema)
    client.save(verbosity=0)
    Domain(domain=f"{schema.replace('_', '-')}.{DOMAIN}", tenant=client, is_primary=True).save()
    return client


def onboard(count: int) -> list[float]:
    """Create ``count`` tenants one by one, timing each; each is deleted (schema dropped) afterwards, untimed."""
    import uuid

    times = []
    for _ in range(count):
        schema = f"onboard_{uuid.uuid4().hex[:10]}"
        start = time.perf_counter()
        client = _new_tenant(schema)
        times.append(time.perf_counter() - start)
        client.delete(force_drop=True)
    return times


def _fleet():
    from django_tenants_side.dt_shared.models import Client

    return Client.objects.filter(schema_name__startswith=FLEET_PREFIX).order_by("schema_name")


def fleet_create(count: int) -> dict:
    """Grow the fleet to ``count`` tenants (untimed set-up, made fast; see below).

    The first fleet tenant is created the django-tenants way (``save()``:
    schema + ``migrate_schemas``). The others get the same result directly:
    in one transaction per 50 tenants, ``CREATE SCHEMA``, the tables of the
    tenant app (DDL from Django's schema editor, as a migration would create
    them) and the ``django_migrations`` rows the first tenant has; then the
    ``Client`` and ``Domain`` rows in bulk. ``migrate_schemas`` only reads
    ``django_migrations``, so it cannot tell the difference.
    """
    from django.apps import apps
    from django.db import connection
    from django.db.migrations.recorder import MigrationRecorder

    from django_tenants_side.dt_shared.models import Client, Domain

    start = time.perf_counter()
    have = _fleet().count()
    if have == 0:
        _new_tenant(f"{FLEET_PREFIX}{0:05d}")
        have = 1
    if have >= count:
        return {"tenants": have, "seconds": time.perf_counter() - start}
    first = _fleet().first()
    connection.set_schema_to_public()
    with connection.cursor() as cursor:
        cursor.execute(f'SELECT app, name FROM "{first.schema_name}".django_migrations ORDER BY id')
        rows = cursor.fetchall()
    with connection.schema_editor(collect_sql=True, atomic=False) as editor:
        for model in [MigrationRecorder.Migration, *apps.get_app_config("benchapp").get_models()]:
            editor.create_model(model)
    ddl = [s.rstrip(";") for s in editor.collected_sql]
    params = os.environ["BENCH_DT_DATABASE"]
    names = [f"{FLEET_PREFIX}{i:05d}" for i in range(have, count)]
    values = ", ".join(["(%s, %s, now())"] * len(rows))
    flat = [v for row in rows for v in row]
    with pg_connect(params) as raw:
        for i in range(0, len(names), 50):
            with raw.transaction():
                for schema in names[i : i + 50]:
                    raw.execute(f'CREATE SCHEMA "{schema}"')
                    raw.execute(f'SET LOCAL search_path TO "{schema}"')
                    for sql in ddl:
                        raw.execute(sql)
                    raw.execute(f"INSERT INTO django_migrations (app, name, applied) VALUES {values}", flat)
    Client.auto_create_schema = False
    try:
        clients = Client.objects.bulk_create([Client(schema_name=s, name=s) for s in names])
    finally:
        Client.auto_create_schema = True
    Domain.objects.bulk_create(
        [Domain(domain=f"{c.schema_name.replace('_', '-')}.{DOMAIN}", tenant=c, is_primary=True) for c in clients]
    )
    return {"tenants": _fleet().count(), "seconds": time.perf_counter() - start}


def migrate(executor: str) -> dict:
    """``manage.py migrate_schemas --tenant --executor=<executor>``, timed; then what it left, checked."""
    from django.core.management import call_command
    from django.db import connection

    tenants = _fleet().count()
    start = time.perf_counter()
    call_command("migrate_schemas", tenant=True, executor=executor, interactive=False, verbosity=0)
    seconds = time.perf_counter() - start
    connection.set_schema_to_public()
    import benchapp

    expected = {1: "0001_initial", 2: "0002_note_pinned", 3: "0003_note_archived"}[benchapp.VERSION]
    with connection.cursor() as cursor:  # every fleet schema now records the latest migration
        cursor.execute(
            "SELECT count(*) FROM pg_namespace n WHERE n.nspname LIKE %s AND EXISTS ("
            "SELECT 1 FROM pg_class c WHERE c.relnamespace = n.oid AND c.relname = 'django_migrations')",
            [FLEET_PREFIX.replace("_", "\\_") + "%"],
        )
        schemas = cursor.fetchone()[0]
        done = 0
        for client in _fleet():
            cursor.execute(
                f'SELECT 1 FROM "{client.schema_name}".django_migrations WHERE app = %s AND name = %s',
                ["benchapp", expected],
            )
            done += cursor.fetchone() is not None
    return {"tenants": tenants, "schemas": schemas, "at_latest": done, "seconds": seconds}


def touch(count: int) -> dict:
    """One query in each of ``count`` tenants on the one connection, switching ``search_path``; time and RSS growth."""
    from benchapp.models import Note
    from django.db import connection

    tenants = list(_fleet()[: count + 1])
    assert len(tenants) == count + 1, f"the fleet has {len(tenants)} tenants, {count + 1} needed"
    connection.set_tenant(tenants[0])  # warm-up: imports, the connection itself
    Note.objects.count()
    gc.collect()
    before = rss_mib()
    start = time.perf_counter()
    for tenant in tenants[1:]:
        connection.set_tenant(tenant)
        Note.objects.count()
    seconds = time.perf_counter() - start
    connection.set_schema_to_public()
    gc.collect()
    return {"seconds": seconds, "rss_growth_mib": rss_mib() - before, "connections": 1}


_routing: list = []


def routing(requests: int) -> dict:
    """TenantMainMiddleware (domain lookup, search_path) vs the same view on a plain connection, alternating.

    The first call creates the tenant (three notes) and both clients.
    Returns each request's seconds, per variant.
    """
    if not _routing:
        _routing.extend(_routing_setup())
    routed, plain, host = _routing
    return alternate(routed, plain, host, {"routed": "/routed/", "plain": "/plain/"}, requests)


def _routing_setup() -> tuple:
    from benchapp.models import Account, Note, Transaction
    from django.conf import settings
    from django.db import connection
    from django.test import Client as HttpClient
    from django.test import override_settings

    from django_tenants_side.dt_shared.models import Client

    schema = settings.ROUTING_SCHEMA
    tenant = Client.objects.filter(schema_name=schema).first() or _new_tenant(schema)
    host = f"{schema}.{DOMAIN}"
    connection.set_tenant(tenant)
    if not Note.objects.exists():
        account = Account.objects.create(name="Checking")
        txn = Transaction.objects.create(account=account, reference="r1", amount=1, booked_on="2024-01-01")
        Note.objects.bulk_create([Note(transaction=txn, body=f"note {i}") for i in range(3)])
    connection.set_schema_to_public()
    base = list(settings.MIDDLEWARE)
    with override_settings(MIDDLEWARE=["django_tenants.middleware.main.TenantMainMiddleware", *base]):
        routed = HttpClient()
        assert routed.get("/routed/", HTTP_HOST=host).content == b"3"
    with override_settings(MIDDLEWARE=base):
        plain = HttpClient()
        assert plain.get("/plain/", HTTP_HOST=host).content == b"3"
    for _ in range(50):  # warm-up
        routed.get("/routed/", HTTP_HOST=host)
        plain.get("/plain/", HTTP_HOST=host)
    return routed, plain, host


if __name__ == "__main__":
    serve(
        {
            "onboard": onboard,
            "fleet_create": fleet_create,
            "migrate": migrate,
            "touch": touch,
            "routing": routing,
        },
        hello,
    )
