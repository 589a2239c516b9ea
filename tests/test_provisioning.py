"""register_tenant: create-or-resume on every live server, crash-safe, race-safe."""

from __future__ import annotations

import asyncio

import pytest
from django.conf import settings
from django.db import connections
from django.test import override_settings

from tenant_schema import databases, signals
from tenant_schema.context import tenant_context
from tenant_schema.exceptions import TenantSchemaError, UnknownServer
from tenant_schema.lifecycle.archive import purge_tenant
from tenant_schema.lifecycle.register import aregister_tenant, register_tenant
from tenant_schema.migration_plan import migration_plan
from tenant_schema.models import Tenant
from tenant_schema.plugins import get_plugins
from tenant_schema.registry import get_tenant
from tenant_schema.testing import unique_slug
from tests.conftest import require_server
from tests.tenantapp.helpers import start_child, tables, unapplied
from tests.tenantapp.models import Note

APP_TABLES = {"tenantapp_category", "tenantapp_note", "tenantapp_tag", "tenantapp_tag_notes", "django_migrations"}
V1 = {"tenantapp": "tests.tenantapp.migrations_v1"}  # only 0001: the models have moved on


def db_exists(server_key: str, name: str) -> bool:
    from tenant_schema.servers import get_server

    server = get_server(server_key)
    return get_plugins().hook.tenant_schema_database_exists(dialect=server.dialect, server=server, name=name)


@pytest.fixture
def cleanup(db_access):
    """Slugs to purge after the test, whatever state they are in."""
    slugs: list[str] = []
    yield slugs
    for slug in slugs:
        tenant = Tenant.objects.filter(slug=slug).first()
        if tenant is not None:
            tenant.database.close()
            purge_tenant(tenant)


@pytest.fixture
def no_cloning():
    """New databases are built with DDL, not cloned from a template: for tests of the DDL path's steps."""
    with override_settings(TENANT_SCHEMA={**settings.TENANT_SCHEMA, "CLONE_TEMPLATES": False}):
        yield


@pytest.mark.django_db
def test_register_creates_a_ready_tenant_as_if_migrated(server_key, cleanup):
    slug = unique_slug("prov")
    cleanup.append(slug)
    seen = []
    signals.tenant_provisioned.connect(
        lambda sender, tenant, **kw: seen.append(tenant.slug), weak=False, dispatch_uid="t1"
    )
    try:
        tenant = register_tenant(slug, server=server_key, name="Provisioned Ltd")
    finally:
        signals.tenant_provisioned.disconnect(dispatch_uid="t1")
    assert tenant.status == Tenant.Status.READY and tenant.provisioned_at is not None
    assert (tenant.server, tenant.name, tenant.last_error) == (server_key, "Provisioned Ltd", "")
    assert seen == [slug]
    assert APP_TABLES | {"audit_event"} <= tables(tenant)
    assert not unapplied(tenant)
    with tenant_context(tenant):
        Note.objects.create(title="hello", pinned=True)
        assert list(Note.objects.values_list("title", "pinned")) == [("hello", True)]


@pytest.mark.django_db
def test_register_is_idempotent(cleanup):
    slug = unique_slug("idem")
    cleanup.append(slug)
    first = register_tenant(slug, server="sqlite")
    with tenant_context(first):
        Note.objects.create(title="kept")
    again = register_tenant(slug)
    assert again.pk == first.pk and again.status == Tenant.Status.READY
    assert Tenant.objects.filter(slug=slug).count() == 1
    with tenant_context(again):
        assert Note.objects.count() == 1


@pytest.mark.django_db
def test_bad_input_fails_before_anything_is_written(db_access):
    with pytest.raises(ValueError, match="invalid tenant slug 'Bad Slug'"):
        register_tenant("Bad Slug")
    with pytest.raises(UnknownServer, match="unknown tenant server 'nowhere'"):
        register_tenant(unique_slug(), server="nowhere")
    assert not Tenant.objects.exists()


@pytest.mark.django_db
def test_server_mismatch_and_archived_tenants_are_refused(cleanup):
    slug = unique_slug("refuse")
    cleanup.append(slug)
    register_tenant(slug, server="sqlite")
    with pytest.raises(TenantSchemaError, match="registered on server 'sqlite', not 'pg'"):
        register_tenant(slug, server="pg")
    from tenant_schema.lifecycle.archive import archive_tenant

    archive_tenant(slug)
    with pytest.raises(TenantSchemaError, match="is archived"):
        register_tenant(slug)


@pytest.mark.django_db
def test_failure_marks_failed_and_a_rerun_completes(server_key, cleanup, settings):
    slug = unique_slug("fail")
    cleanup.append(slug)
    settings.TENANT_SCHEMA = {
        **settings.TENANT_SCHEMA,
        "TENANT_TABLES": [("tests.tenantapp.tables.Missing", "x", "id")],
    }
    with pytest.raises(ImportError):
        register_tenant(slug, server=server_key)
    tenant = get_tenant(slug)
    assert tenant.status == Tenant.Status.FAILED
    assert "Missing" in tenant.last_error
    settings.TENANT_SCHEMA = {
        **settings.TENANT_SCHEMA,
        "TENANT_TABLES": [("tests.tenantapp.tables.AuditEvent", "audit_event", "id")],
    }
    tenant = register_tenant(slug)
    assert tenant.status == Tenant.Status.READY and tenant.last_error == ""
    assert "audit_event" in tables(tenant) and not unapplied(tenant)


@pytest.mark.django_db
def test_models_ahead_of_migrations_replays_the_migrations(server_key, cleanup):
    """When the migrations do not describe the models, onboarding runs the migrations."""
    slug = unique_slug("replay")
    cleanup.append(slug)
    with override_settings(MIGRATION_MODULES=V1):
        assert "differ from their migrations" in migration_plan().replay_reason
        tenant = register_tenant(slug, server=server_key)
        assert not unapplied(tenant)
    connection = tenant.database.connection
    with connection.cursor() as cursor:
        columns = {c.name for c in connection.introspection.get_table_description(cursor, "tenantapp_note")}
    assert "pinned" not in columns and "title" in columns  # exactly what 0001 creates
    assert migration_plan().direct_ok
    assert unapplied(tenant)  # 0002 is pending now


@pytest.mark.django_db
def test_data_migrations_force_a_replay(monkeypatch):
    from django.db.migrations.loader import MigrationLoader
    from django.db.migrations.operations import RunPython

    from tenant_schema import migration_plan as mp

    real = mp.graph_operations

    def with_run_python(loader: MigrationLoader, node):
        extra = [RunPython(RunPython.noop)] if node == ("tenantapp", "0002_note_pinned") else []
        return [*real(loader, node), *extra]

    monkeypatch.setattr(mp, "graph_operations", with_run_python)
    mp.reset_migration_plan()
    try:
        assert mp.migration_plan().replay_reason == "migration tenantapp.0002_note_pinned has a RunPython operation"
    finally:
        mp.reset_migration_plan()


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    "crash, after",
    [("create_from_models", False), ("record", False), ("create_from_models", True), ("create_tenant_tables", False)],
    ids=["before-tables", "while-recording", "after-tables", "before-dataclass-tables"],
)
def test_a_crash_anywhere_is_never_ready_and_a_rerun_completes(server_key, cleanup, no_cloning, crash, after):
    slug = unique_slug("crash")
    cleanup.append(slug)
    child = start_child(slug, server_key, crash=crash, after=after)
    out, err = child.communicate(timeout=120)
    assert child.returncode == 3, err  # died mid-way, as injected
    tenant = get_tenant(slug)
    assert tenant.status == Tenant.Status.PROVISIONING
    tenant = register_tenant(slug)
    assert tenant.status == Tenant.Status.READY
    assert APP_TABLES | {"audit_event"} <= tables(tenant)
    assert not unapplied(tenant)


@pytest.mark.django_db
def test_a_replay_interrupted_mid_migration_resumes(server_key, cleanup, monkeypatch):
    """Where DDL cannot roll back (MySQL), the tables of a half-applied migration must not block re-runs."""
    from django.db.backends.base.schema import BaseDatabaseSchemaEditor

    slug = unique_slug("replaycrash")
    cleanup.append(slug)
    real_create_model = BaseDatabaseSchemaEditor.create_model
    created = []

    def crash_on_the_second_model(editor, model):
        if model._meta.app_label == "tenantapp":
            created.append(model)
            if len(created) == 2:
                raise RuntimeError("crash in the middle of 0001_initial")
        return real_create_model(editor, model)

    with override_settings(MIGRATION_MODULES=V1):  # the migrations are replayed
        monkeypatch.setattr(BaseDatabaseSchemaEditor, "create_model", crash_on_the_second_model)
        with pytest.raises(RuntimeError, match="middle of 0001_initial"):
            register_tenant(slug, server=server_key)
        monkeypatch.undo()
        assert get_tenant(slug).status == Tenant.Status.FAILED
        tenant = register_tenant(slug)
        assert tenant.status == Tenant.Status.READY
        assert not unapplied(tenant)
    with tenant_context(tenant):
        assert Note.objects.count() == 0


@pytest.mark.django_db
def test_a_rerun_never_recreates_the_database_of_a_tenant_that_was_ready(server_key, cleanup):
    slug = unique_slug("wasready")
    cleanup.append(slug)
    tenant = register_tenant(slug, server=server_key)
    with tenant_context(tenant):
        Note.objects.create(title="served data")
    Tenant.objects.filter(pk=tenant.pk).update(status=Tenant.Status.FAILED)  # e.g. reset by hand
    tenant = register_tenant(slug)
    assert tenant.status == Tenant.Status.READY
    with tenant_context(tenant):
        assert list(Note.objects.values_list("title", flat=True)) == ["served data"]


@pytest.mark.django_db(transaction=True)
def test_two_processes_registering_one_slug_make_one_tenant(server_key, cleanup):
    slug = unique_slug("race")
    cleanup.append(slug)
    children = [start_child(slug, server_key, slow=0.5) for _ in range(2)]
    outputs = [child.communicate(timeout=120) for child in children]
    for child, (out, err) in zip(children, outputs):
        assert child.returncode == 0, err
        assert out.strip() == "ready"
    assert Tenant.objects.filter(slug=slug).count() == 1
    tenant = get_tenant(slug)
    assert tenant.status == Tenant.Status.READY and not unapplied(tenant)
    assert db_exists(server_key, tenant.database_name)


@pytest.mark.django_db(transaction=True)
async def test_aregister_tenant_from_async_code(cleanup):
    slug = unique_slug("async")
    cleanup.append(slug)
    tenant = await aregister_tenant(slug, server="sqlite", name="Async Inc")
    assert tenant.status == Tenant.Status.READY and tenant.name == "Async Inc"
    async with tenant_context(slug):
        await Note.objects.acreate(title="from async")
        assert await Note.objects.acount() == 1


@pytest.mark.django_db
def test_purge_drops_the_database_then_the_row(server_key, db_access):
    slug = unique_slug("purge")
    tenant = register_tenant(slug, server=server_key)
    dropped = []
    signals.tenant_dropped.connect(
        lambda sender, tenant, **kw: dropped.append(tenant.slug), weak=False, dispatch_uid="t2"
    )
    try:
        purge_tenant(slug)
    finally:
        signals.tenant_dropped.disconnect(dispatch_uid="t2")
    assert dropped == [slug]
    assert not Tenant.objects.filter(slug=slug).exists()
    assert not db_exists(server_key, tenant.database_name)


@pytest.mark.django_db
def test_purge_keeps_the_row_when_the_drop_fails(db_access, monkeypatch):
    slug = unique_slug("keep")
    tenant = register_tenant(slug, server="sqlite")

    def refuse(tenant_db):
        raise OSError("disk says no")

    monkeypatch.setattr(databases, "drop_bound_database", refuse)
    with pytest.raises(OSError, match="disk says no"):
        purge_tenant(slug)
    assert get_tenant(slug).status == Tenant.Status.ARCHIVED  # kept, and no longer served
    assert db_exists("sqlite", tenant.database_name)
    monkeypatch.undo()
    purge_tenant(tenant)
    assert not db_exists("sqlite", tenant.database_name)


@pytest.mark.django_db
def test_a_purge_failing_after_the_drop_leaves_an_unserved_row_and_a_rerun_finishes(server_key, monkeypatch):
    from django.db import DatabaseError
    from django.http import Http404, HttpResponse
    from django.test import RequestFactory

    from tenant_schema.middleware import TenantMiddleware

    slug = unique_slug("halfpurge")
    tenant = register_tenant(slug, server=server_key)
    middleware = TenantMiddleware(lambda request: HttpResponse(str(Note.objects.count())))

    def request():
        return middleware(RequestFactory().get("/", HTTP_HOST=f"{slug}.example.com"))

    assert request().status_code == 200  # served, and in the routing cache

    def registry_down(self, *args, **kwargs):
        raise DatabaseError("registry unavailable")

    monkeypatch.setattr(Tenant, "delete", registry_down)
    with pytest.raises(DatabaseError, match="registry unavailable"):
        purge_tenant(slug)
    monkeypatch.undo()
    assert get_tenant(slug).status == Tenant.Status.ARCHIVED
    assert not db_exists(server_key, tenant.database_name)
    with pytest.raises(Http404):
        request()  # never routed to the dropped database
    assert not db_exists(server_key, tenant.database_name)  # (SQLite would have made an empty file)
    purge_tenant(slug)
    assert not Tenant.objects.filter(slug=slug).exists()


@pytest.mark.django_db(transaction=True)
async def test_register_many_tenants_concurrently_from_async_tasks(cleanup):
    slugs = [unique_slug("many") for _ in range(4)]
    cleanup.extend(slugs)
    tenants = await asyncio.gather(*(aregister_tenant(s, server="sqlite") for s in slugs))
    assert sorted(t.slug for t in tenants) == sorted(slugs)
    assert all(t.status == Tenant.Status.READY for t in tenants)


def test_a_sqlite_registry_is_a_file_child_processes_can_open(db_access):
    connection = connections["default"]
    if connection.vendor != "sqlite":
        pytest.skip("the registry is on a server (TENANT_SCHEMA_REGISTRY_URL)")
    assert not connection.is_in_memory_db()


@pytest.mark.django_db
def test_register_on_a_schema_isolated_server(cleanup):
    require_server("pg")
    from tenant_schema.servers import get_server

    pg = get_server("pg")
    get_plugins().hook.tenant_schema_create_database(
        dialect=pg.dialect, server=pg, name=get_server("pgschema").settings["NAME"]
    )
    a, b = unique_slug("schema"), unique_slug("schema")
    cleanup.extend([a, b])
    first, second = register_tenant(a, server="pgschema"), register_tenant(b, server="pgschema")
    assert APP_TABLES | {"audit_event"} <= tables(first)
    assert not unapplied(first) and not unapplied(second)
    with tenant_context(first):
        Note.objects.create(title="schema a")
    with tenant_context(second):
        assert Note.objects.count() == 0


@pytest.mark.django_db(transaction=True)
def test_manage_py_migrate_check_accepts_a_tenant_alias_in_a_fresh_process(tenant):
    import subprocess
    import sys

    from tests.tenantapp.helpers import ROOT, child_config

    config = child_config(tenant.slug, tenant.server)
    script = (
        "import json, os, sys; cfg = json.loads(sys.argv[1]);"
        "os.environ['DJANGO_SETTINGS_MODULE'] = 'tests.settings';"
        "import django; from django.conf import settings;"
        "settings.DATABASES['default']['NAME'] = cfg['registry']; settings.TENANT_SCHEMA = cfg['tenant_schema'];"
        "django.setup(); from django.core.management import execute_from_command_line;"
        "execute_from_command_line(['manage.py', 'migrate', '--database', sys.argv[2], '--check'])"
    )
    import json
    import os

    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", script, json.dumps(config), tenant.database.alias],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    missing = subprocess.run(
        [sys.executable, "-c", script, json.dumps(config), "tenant:no-such-tenant"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert missing.returncode == 1 and "no tenant 'no-such-tenant' is registered" in missing.stderr


@pytest.mark.django_db
def test_onboarding_in_a_loop_leaves_no_tenant_connection_open(server_key, cleanup):
    from tenant_schema.databases import close_tenant_connections, open_tenant_connections

    close_tenant_connections()  # what earlier tests left open (idle shared connections count too)
    counts = []
    for _ in range(3):
        slug = unique_slug("loop")
        cleanup.append(slug)
        tenant = register_tenant(slug, server=server_key)
        assert connections[tenant.database.alias].connection is None
        counts.append(open_tenant_connections())
    # At most the server's own connection (CREATE DATABASE) stays open, reused by the next sign-up.
    assert counts[0] == counts[-1] <= 1
