"""Maintenance mode, restoring archived tenants, and the 404 for a tenant view with no tenant.

What a site relies on: while a tenant is in maintenance every write is
refused (by the ORM, the Table API and the middleware) and nothing changes,
while reads keep working; switching it off makes writes work again; an
archived tenant comes back with its data, at the current migrations, or is
refused with a clear error that leaves it archived.
"""

from __future__ import annotations

import dataclasses
import io
import json
import time
import uuid

import pytest
from asgiref.sync import sync_to_async
from django.core.exceptions import ImproperlyConfigured
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import transaction
from django.db.migrations.executor import MigrationExecutor
from django.http import HttpResponse, HttpResponseNotFound, JsonResponse
from django.test import AsyncClient, Client
from django.urls import path

from tenant_schema import (
    NotOurDatabase,
    TenantDatabaseDoesNotExist,
    TenantNotFound,
    TenantSchemaError,
    TenantUnavailable,
    archive_tenant,
    close_tenant_connections,
    get_tenant_db,
    restore_tenant,
    set_maintenance,
    signals,
    tenant_context,
)
from tenant_schema.lifecycle.pool import pool_slug
from tenant_schema.migration_plan import migration_plan
from tenant_schema.models import Tenant
from tenant_schema.plugins import get_plugins
from tenant_schema.registry import activate, deactivate, ready_tenants
from tests.tenantapp.helpers import CHILD_SETUP, no_sql, run_child, unapplied
from tests.tenantapp.models import Category, Note, Tag

from .conftest import LIVE_SERVERS, new_tenant_id, require_live_server

SERVERS = [*LIVE_SERVERS, "pgschema"]

pytestmark = pytest.mark.django_db(transaction=True)
AUDIT = "audit_event"  # the TENANT_TABLES table every test tenant has


@pytest.fixture(params=SERVERS)
def server(request, db_access):
    require_live_server(request.param)
    return request.param


def plain(rows) -> list[dict]:
    """Rows as dicts: a table opened by name gives dicts, one registered in this process its dataclass."""
    return [row if isinstance(row, dict) else dataclasses.asdict(row) for row in rows]


def refused(write) -> None:
    """``write()`` raises ``TenantUnavailable``."""
    with pytest.raises(TenantUnavailable, match="is in maintenance mode: writes to it are refused, reads still work"):
        write()


def snapshot() -> dict:
    """Everything the tenant app holds, read through the ORM (a read, so allowed in maintenance)."""
    return {
        "notes": list(Note.objects.order_by("pk").values_list("pk", "title", "pinned")),
        "categories": list(Category.objects.order_by("pk").values_list("pk", "name")),
        "tags": list(Tag.objects.order_by("pk").values_list("pk", "label", "category_id")),
        "links": sorted(Tag.notes.through.objects.values_list("tag_id", "note_id")),
    }


# -- the ORM and the Table API ---------------------------------------------------------


def test_orm_writes_of_every_kind_are_refused_and_reads_work(server, tenant_factory):
    tenant = tenant_factory(server=server)
    with tenant_context(tenant):
        category = Category.objects.create(name="books")
        note = Note.objects.create(title="first")
        tag = Tag.objects.create(label="red", category=category)
        tag.notes.add(note)
        before = snapshot()

    set_maintenance(tenant.slug, True)
    with tenant_context(tenant.slug) as current:
        assert current.maintenance and current.status == Tenant.Status.READY  # still served for reads
        loaded_note, loaded_tag = Note.objects.get(pk=note.pk), Tag.objects.get(pk=tag.pk)
        writes = {
            "create": lambda: Note.objects.create(title="new"),
            "save": lambda: Note(pk=note.pk, title="changed").save(),
            "save of a loaded row": lambda: loaded_note.save(),
            "QuerySet.update": lambda: Note.objects.filter(pk=note.pk).update(title="changed"),
            "QuerySet.delete": lambda: Note.objects.all().delete(),
            "Model.delete": lambda: loaded_note.delete(),
            "cascading delete": lambda: Category.objects.all().delete(),
            "bulk_create": lambda: Note.objects.bulk_create([Note(title="x"), Note(title="y")]),
            "bulk_update": lambda: Note.objects.bulk_update([Note(pk=note.pk, title="z")], ["title"]),
            "get_or_create": lambda: Note.objects.get_or_create(title="maybe"),
            "update_or_create": lambda: Note.objects.update_or_create(pk=note.pk, defaults={"title": "u"}),
            "many-to-many add": lambda: loaded_tag.notes.add(loaded_note),
            "many-to-many clear": lambda: loaded_tag.notes.clear(),
            "reverse foreign key add": lambda: category.tags.add(Tag(label="new"), bulk=False),
        }
        for name, write in writes.items():
            with no_sql(tenant.database):  # refused before any SQL reaches the tenant
                with pytest.raises(TenantUnavailable, match=f"tenant {tenant.slug!r} is in maintenance mode"):
                    write()
            assert snapshot() == before, f"{name} changed something"
        with transaction.atomic(using=tenant.database.alias):  # a locking read is a write's first step
            refused(lambda: list(Note.objects.select_for_update()))
        # Reads of every kind go on.
        assert Note.objects.get(pk=note.pk).title == "first"
        assert list(loaded_tag.notes.values_list("title", flat=True)) == ["first"]
        assert Note.objects.filter(tags__category__name="books").count() == 1
        assert snapshot() == before

    set_maintenance(tenant.slug, False)
    with tenant_context(tenant.slug):
        Note.objects.create(title="after")
        Note.objects.filter(pk=note.pk).update(title="first, edited")
        assert sorted(Note.objects.values_list("title", flat=True)) == ["after", "first, edited"]


def test_table_api_writes_are_refused_and_reads_work(server, tenant_factory):
    tenant = tenant_factory(server=server)
    table = tenant.database.table(AUDIT)
    table.create({"id": 1, "action": "signed up"})

    set_maintenance(tenant, True)
    writes = {
        "create": lambda: table.create({"id": 2, "action": "x"}),
        "insert": lambda: table.insert({"id": 2, "action": "x"}),
        "update": lambda: table.update(1, {"action": "changed"}),
        "delete": lambda: table.delete(1),
        "batch_create": lambda: table.batch_create([{"id": 3, "action": "a"}, {"id": 4, "action": "b"}]),
        "batch_update": lambda: table.batch_update([{"id": 1, "action": "changed"}]),
        "upsert": lambda: table.upsert([{"id": 1, "action": "changed"}, {"id": 5, "action": "new"}]),
    }
    for name, write in writes.items():
        with no_sql(tenant.database):
            refused(write)
        assert plain(table.list()) == [{"id": 1, "action": "signed up"}], name
    assert plain([table.read(1)]) == [{"id": 1, "action": "signed up"}]
    assert table.count() == 1
    assert plain(table.list(where={"action__startswith": "signed"})) == [{"id": 1, "action": "signed up"}]

    set_maintenance(tenant, False)
    table.update(1, {"action": "changed"})
    table.batch_create([{"id": 2, "action": "more"}])
    assert plain(table.list()) == [{"id": 1, "action": "changed"}, {"id": 2, "action": "more"}]


def test_schema_changes_are_refused_and_change_nothing(server, tenant_factory):
    """New tables, dropped tables, new and dropped indexes: the Table API's DDL waits for maintenance to end."""
    from tenant_schema import create_index, drop_index, drop_table, list_indexes, list_tables, register_table

    @dataclasses.dataclass
    class Invoice:
        number: str = dataclasses.field(metadata={"max_length": 20})
        id: int | None = None

    tenant = tenant_factory(server=server)
    index = create_index(tenant.database, AUDIT, ["action"])
    tables = list_tables(tenant.database)
    set_maintenance(tenant, True)
    for name, change in {
        "register_table": lambda: register_table(tenant.database, Invoice, "invoice"),
        "drop_table": lambda: drop_table(tenant.database, AUDIT),
        "create_index": lambda: create_index(tenant.database, AUDIT, ["id", "action"]),
        "drop_index": lambda: drop_index(tenant.database, index, AUDIT),
    }.items():
        refused(change)
        assert list_tables(tenant.database) == tables, name
        assert [i.name for i in list_indexes(tenant.database, AUDIT) if i.name == index] == [index], name
    assert create_index(tenant.database, AUDIT, ["action"]) == index, "an index already there is no change"
    set_maintenance(tenant, False)
    register_table(tenant.database, Invoice, "invoice")
    assert "invoice" in list_tables(tenant.database)


async def test_async_writes_are_refused(tenant_factory):
    tenant = await sync_to_async(tenant_factory)()
    table = await sync_to_async(tenant.database.table)(AUDIT)  # opening it reads the catalogue
    await sync_to_async(set_maintenance)(tenant, True)
    async with tenant_context(tenant.slug):
        with pytest.raises(TenantUnavailable):
            await Note.objects.acreate(title="async")
        with pytest.raises(TenantUnavailable):
            await table.acreate({"id": 1, "action": "async"})
        with pytest.raises(TenantUnavailable):
            await table.aupsert([{"id": 1, "action": "async"}])
        assert await Note.objects.acount() == 0
        assert await table.acount() == 0
    await sync_to_async(tenant.database.close)()


def test_this_process_sees_a_switch_at_once(tenant_factory, settings):
    settings.TENANT_SCHEMA = {**settings.TENANT_SCHEMA, "ROUTING_CACHE_SECONDS": 300}
    tenant = tenant_factory()
    with tenant_context(tenant):
        Note.objects.create(title="cached")  # the routing cache now holds the ready row
    assert ready_tenants.peek(tenant.slug) is not None
    set_maintenance(tenant.slug, True)
    with tenant_context(tenant):  # the row as loaded before the switch: the flag is read from the registry
        refused(lambda: Note.objects.create(title="refused"))
    set_maintenance(tenant.slug, False)
    with tenant_context(tenant):
        Note.objects.create(title="accepted")
        assert Note.objects.count() == 2


def test_another_process_sees_a_switch_within_routing_cache_seconds(tenant_factory, settings):
    """A switch by another process reaches this one when its cached row expires, and no later."""
    settings.TENANT_SCHEMA = {**settings.TENANT_SCHEMA, "ROUTING_CACHE_SECONDS": 2}
    tenant = tenant_factory()
    with tenant_context(tenant):
        Note.objects.create(title="cached")
    # What another process's set_maintenance looks like from here: the row
    # changes, and nothing tells this process's routing cache.
    Tenant.objects.filter(pk=tenant.pk).update(maintenance=True)
    with tenant_context(tenant):
        Note.objects.create(title="still within the cache's time")
        time.sleep(2.1)
        refused(lambda: Note.objects.create(title="refused"))
        assert Note.objects.count() == 2


CHILD = (
    CHILD_SETUP
    + r"""
from tenant_schema import TenantUnavailable, tenant_context
from tests.tenantapp.models import Note
with tenant_context(cfg["slug"]):
    print(Note.objects.count())
    try:
        Note.objects.create(title="from another process")
    except TenantUnavailable:
        print("refused")
    else:
        print("written")
"""
)


def write_from_another_process(slug: str) -> list[str]:
    return run_child(CHILD, slug, "default")


def test_another_process_refuses_writes_while_reads_go_on(tenant_factory):
    tenant = tenant_factory()
    with tenant_context(tenant):
        Note.objects.create(title="first")
    set_maintenance(tenant, True)
    assert write_from_another_process(tenant.slug) == ["1", "refused"]
    set_maintenance(tenant, False)
    assert write_from_another_process(tenant.slug) == ["1", "written"]
    assert titles(tenant) == ["first", "from another process"]


def test_writes_go_on_where_maintenance_work_is_done(tenant_factory):
    """``activate(maintenance_writes=True)`` (migrations, repairs) and tenants that are not ready write."""
    tenant = tenant_factory()
    set_maintenance(tenant, True)
    token = activate(Tenant.objects.get(pk=tenant.pk), maintenance_writes=True)
    try:
        Note.objects.create(title="repair")
        tenant.database.table(AUDIT).create({"id": 1, "action": "repair"})
    finally:
        deactivate(token)
    with tenant_context(tenant.slug):
        refused(lambda: Note.objects.create(title="the site itself"))
    refused(lambda: tenant.database.table(AUDIT).create({"id": 2, "action": "elsewhere"}))
    with tenant_context(tenant.slug, maintenance=True):  # an operator's deliberate repair
        Note.objects.create(title="deliberate repair")

    @tenant_context(tenant.slug, maintenance=True)
    def repair():
        Note.objects.filter(title="deliberate repair").update(title="repaired")

    repair()

    archive_tenant(tenant)  # not served at all: a deliberate maintenance context writes
    with tenant_context(tenant.slug, maintenance=True):
        Note.objects.create(title="archived repair")
        assert Note.objects.count() == 3


def test_set_maintenance_signals_each_switch_and_takes_only_a_bool(tenant_factory):
    tenant = tenant_factory()
    seen = []

    def receiver(sender, tenant, maintenance, **kwargs):
        seen.append((tenant.slug, maintenance))

    signals.tenant_maintenance_changed.connect(receiver)
    try:
        assert set_maintenance(tenant.slug, True).maintenance is True
        assert set_maintenance(tenant.slug, True).maintenance is True  # already on: no switch
        assert set_maintenance(tenant, False).maintenance is False
    finally:
        signals.tenant_maintenance_changed.disconnect(receiver)
    assert seen == [(tenant.slug, True), (tenant.slug, False)]
    with pytest.raises(TypeError, match="on=True or on=False, not 'off'"):
        set_maintenance(tenant.slug, "off")  # a truthy string must not switch it on
    assert Tenant.objects.get(pk=tenant.pk).maintenance is False
    with pytest.raises(TenantNotFound):
        set_maintenance("nobody-here", True)


# -- the middleware -------------------------------------------------------------------


def notes(request):
    return JsonResponse({"titles": sorted(Note.objects.values_list("title", flat=True))})


def add_note(request):
    Note.objects.create(title=request.method)
    return HttpResponse("added", status=201)


async def anotes(request):
    return JsonResponse({"titles": sorted([n.title async for n in Note.objects.all()])})


async def aadd_note(request):
    await Note.objects.acreate(title=request.method)
    return HttpResponse("added", status=201)


def not_found(request, exception):
    return HttpResponseNotFound(f"site 404: {exception}")


urlpatterns = [
    path("notes/", notes),
    path("add/", add_note),
    path("anotes/", anotes),
    path("aadd/", aadd_note),
]
handler404 = "tests.test_maintenance.not_found"


def titles(tenant) -> list[str]:
    with tenant_context(tenant.slug, maintenance=True):
        return sorted(Note.objects.values_list("title", flat=True))


@pytest.mark.urls("tests.test_maintenance")
def test_middleware_answers_writes_with_503_and_serves_reads(tenant_factory, settings):
    tenant = tenant_factory()
    client = Client(HTTP_HOST=f"{tenant.slug}.example.com")
    assert client.post("/add/").status_code == 201
    set_maintenance(tenant, True)

    for method in ("post", "put", "patch", "delete"):
        response = getattr(client, method)("/add/")
        assert response.status_code == 503, method
        assert response["Retry-After"] == "120"
        assert "no-cache" in response["Cache-Control"]
        assert b"Down for maintenance" in response.content
    assert titles(tenant) == ["POST"], "no write view ran"

    assert client.get("/notes/").json() == {"titles": ["POST"]}, "reads are served"
    assert client.head("/notes/").status_code == 200
    response = client.get("/add/")  # a GET whose view writes: the refused write is a 503, not a 500
    assert response.status_code == 503 and response["Retry-After"] == "120"
    assert titles(tenant) == ["POST"]

    settings.TENANT_SCHEMA = {**settings.TENANT_SCHEMA, "MAINTENANCE_RETRY_AFTER": 30}
    assert client.post("/add/")["Retry-After"] == "30"
    settings.TENANT_SCHEMA = {**settings.TENANT_SCHEMA, "MAINTENANCE_RETRY_AFTER": "soon"}
    with pytest.raises(ImproperlyConfigured, match=r'MAINTENANCE_RETRY_AFTER"\] must be a whole number'):
        client.post("/add/")
    settings.TENANT_SCHEMA = {**settings.TENANT_SCHEMA, "MAINTENANCE_RETRY_AFTER": 120}

    set_maintenance(tenant, False)
    assert client.post("/add/").status_code == 201
    assert client.get("/add/").status_code == 201
    assert titles(tenant) == ["GET", "POST", "POST"]


@pytest.mark.urls("tests.test_maintenance")
async def test_asgi_middleware_answers_writes_with_503(tenant_factory, settings):
    settings.TENANT_SCHEMA = {**settings.TENANT_SCHEMA, "RESOLVER": "header"}
    tenant = await sync_to_async(tenant_factory)()
    await sync_to_async(set_maintenance)(tenant, True)
    client, headers = AsyncClient(), {"X-Tenant": tenant.slug}  # per request: the ASGI client sends its own first
    for url in ("/aadd/", "/add/"):
        response = await client.post(url, headers=headers)
        assert response.status_code == 503 and response["Retry-After"] == "120", url
        response = await client.get(url, headers=headers)  # the view runs, its write is refused
        assert response.status_code == 503 and response["Retry-After"] == "120", url
    assert (await client.get("/anotes/", headers=headers)).json() == {"titles": []}
    assert (await client.get("/notes/", headers=headers)).json() == {"titles": []}
    await sync_to_async(set_maintenance)(tenant, False)
    assert (await client.post("/aadd/", headers=headers)).status_code == 201
    assert (await client.get("/anotes/", headers=headers)).json() == {"titles": ["POST"]}
    response = await client.get("/anotes/")  # no tenant: the site's 404, under ASGI too
    assert response.status_code == 404 and response.content == b"site 404: no tenant selected"
    await sync_to_async(close_tenant_connections)()  # what the views opened in asgiref's sync thread


@pytest.mark.urls("tests.test_maintenance")
def test_a_tenant_view_with_no_tenant_is_the_sites_404(tenant_factory):
    tenant_factory()
    response = Client(HTTP_HOST="example.com").get("/notes/")  # no slug: no tenant selected
    assert response.status_code == 404
    assert response.content == b"site 404: no tenant selected"
    unknown = Client(HTTP_HOST="nobody.example.com").get("/notes/")
    assert unknown.status_code == 404 and unknown.content == b"site 404: unknown tenant"


# -- restore --------------------------------------------------------------------------


def test_restore_brings_an_archived_tenant_back_at_the_current_migrations(server, tenant_factory):
    tenant = tenant_factory(server=server)
    with tenant_context(tenant):
        Note.objects.create(title="kept")
        # Behind the plan, as a tenant archived before a deploy would be.
        MigrationExecutor(tenant.database.connection).migrate([("tenantapp", "0001_initial")])
    tenant.database.close()
    archive_tenant(tenant)
    restored_signals = []

    def receiver(sender, tenant, **kwargs):
        restored_signals.append((tenant.slug, tenant.status))

    signals.tenant_restored.connect(receiver)
    try:
        restored = restore_tenant(tenant.slug)
    finally:
        signals.tenant_restored.disconnect(receiver)
    assert restored.status == Tenant.Status.READY
    assert restored_signals == [(tenant.slug, Tenant.Status.READY)]
    assert not unapplied(restored), "the migrations it missed were applied"
    assert Tenant.objects.get(pk=tenant.pk).migrated_to == migration_plan().fingerprint
    assert get_tenant_db(tenant.slug).name == tenant.database_name
    with tenant_context(tenant.slug):
        assert list(Note.objects.values_list("title", "pinned")) == [("kept", False)]
        Note.objects.create(title="new", pinned=True)


@pytest.mark.urls("tests.test_maintenance")
def test_a_restored_tenant_is_served_again_and_keeps_its_maintenance_mode(tenant_factory):
    tenant = tenant_factory()
    client = Client(HTTP_HOST=f"{tenant.slug}.example.com")
    client.post("/add/")
    set_maintenance(tenant, True)
    archive_tenant(tenant)
    assert client.get("/notes/").status_code == 404
    assert restore_tenant(tenant).maintenance is True
    assert client.get("/notes/").json() == {"titles": ["POST"]}
    assert client.post("/add/").status_code == 503
    set_maintenance(tenant, False)
    assert client.post("/add/").status_code == 201


def test_only_archived_tenants_are_restored(tenant_factory, db_access):
    ready = tenant_factory()
    with pytest.raises(TenantSchemaError, match=f"tenant '{ready.slug}' is ready, not archived: there is nothing"):
        restore_tenant(ready.slug)
    slug = new_tenant_id()
    failed = Tenant.objects.create(slug=slug, server="default", database_name=f"x_{slug}", status="failed")
    with pytest.raises(TenantSchemaError, match=rf"is failed, not archived: .*`manage.py tenant_register {slug}`"):
        restore_tenant(slug)
    pooled = Tenant.objects.create(slug=pool_slug(), server="default", database_name="x_pooled", status="pooled")
    with pytest.raises(TenantSchemaError, match="is a pooled database, not an archived tenant"):
        restore_tenant(pooled)
    never_ready = Tenant.objects.create(
        slug=new_tenant_id(), server="default", database_name="x_never", status="archived"
    )
    with pytest.raises(TenantSchemaError, match="archived before its registration finished"):
        restore_tenant(never_ready)
    with pytest.raises(TenantNotFound):
        restore_tenant("nobody-here")
    for row in (failed, pooled, never_ready):
        assert Tenant.objects.get(pk=row.pk).status == row.status, "nothing was changed"
        row.delete()


def test_restore_refuses_a_database_dropped_behind_its_back(server, tenant_factory):
    tenant = tenant_factory(server=server)
    archive_tenant(tenant)
    srv = tenant.database.server
    tenant.database.close()
    get_plugins().hook.tenant_schema_drop_database(dialect=srv.dialect, server=srv, name=tenant.database_name)
    with pytest.raises(TenantDatabaseDoesNotExist, match=rf"'{tenant.slug}' cannot be restored: its .* is not on"):
        restore_tenant(tenant.slug)
    assert Tenant.objects.get(pk=tenant.pk).status == Tenant.Status.ARCHIVED
    assert not tenant.database.exists(), "nothing was created"


def test_restore_refuses_a_database_marked_for_someone_else(server, tenant_factory):
    tenant = tenant_factory(server=server)
    with tenant_context(tenant):
        Note.objects.create(title="theirs")
    archive_tenant(tenant)
    Tenant.objects.filter(pk=tenant.pk).update(uid=uuid.uuid4())  # a registry row that is not the marker's
    try:
        with pytest.raises(NotOurDatabase, match="exists but is not tenant"):
            restore_tenant(tenant.slug)
        row = Tenant.objects.get(pk=tenant.pk)
        assert row.status == Tenant.Status.ARCHIVED
        assert titles(row) == ["theirs"]
    finally:
        Tenant.objects.filter(pk=tenant.pk).update(uid=tenant.uid)  # so the fixture can purge it


# -- commands -------------------------------------------------------------------------


def run(*args) -> str:
    out = io.StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


def test_tenant_maintenance_and_tenant_restore_commands(tenant_factory):
    tenant = tenant_factory()
    slug = tenant.slug
    out = run("tenant_maintenance", slug, "on")
    assert out.startswith(f"Tenant '{slug}' is in maintenance mode: reads are served, writes are refused;")
    assert f"End it with 'tenant_maintenance {slug} off'." in out and out.count("\n") == 1
    assert Tenant.objects.get(pk=tenant.pk).maintenance
    assert run("tenant_maintenance", slug, "on").startswith(f"Tenant '{slug}' is already in maintenance mode")

    listed = json.loads(run("tenant_list", "--json"))
    assert next(r for r in listed if r["slug"] == slug)["maintenance"] is True
    assert [slug, "ready+maintenance"] in [line.split()[:2] for line in run("tenant_list").splitlines()]

    out = run("tenant_maintenance", slug, "off")
    assert out == f"Tenant '{slug}' is out of maintenance mode: writes are accepted.\n"
    assert not Tenant.objects.get(pk=tenant.pk).maintenance

    archive_tenant(tenant)
    out = run("tenant_restore", slug)
    assert out.startswith(f"Tenant '{slug}' restored: ready on 'default' (sqlite, database ")
    assert Tenant.objects.get(pk=tenant.pk).status == Tenant.Status.READY


@pytest.mark.parametrize(
    "args, message",
    [
        (("tenant_maintenance", "nobody-here", "on"), "no tenant 'nobody-here' is registered"),
        (("tenant_maintenance", "Not A Slug!", "off"), "no tenant 'Not A Slug!'"),
        (("tenant_maintenance", "{slug}", "maybe"), "invalid choice: 'maybe' (choose from"),
        (("tenant_restore", "nobody-here"), "no tenant 'nobody-here' is registered"),
        (("tenant_restore", "{slug}"), "is ready, not archived: there is nothing to restore"),
    ],
)
def test_command_errors_are_one_line(tenant_factory, args, message):
    slug = tenant_factory().slug
    with pytest.raises(CommandError) as caught:
        run(*(a.format(slug=slug) for a in args))
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_a_data_migration_writes_to_a_tenant_in_maintenance_mode(tenant_factory):
    """The routine maintenance mode exists for: switch it on, migrate (RunPython writes through the ORM), off."""
    from django.test import override_settings

    from tenant_schema.lifecycle.fleet import migrate_tenants

    from .test_provisioning_migrate import old_tenants

    (tenant,) = old_tenants(tenant_factory, "sqlite", 1)
    set_maintenance(tenant, True)
    with override_settings(MIGRATION_MODULES={"tenantapp": "tests.tenantapp.migrations_data"}):
        report = migrate_tenants([tenant.slug])
    assert [r.error for r in report.results] == [None]
    assert report.results[0].applied == ["tenantapp.0002_note_pinned", "tenantapp.0003_welcome_note"]
    assert titles(tenant) == ["welcome"]
    with tenant_context(tenant.slug):
        refused(lambda: Note.objects.create(title="the site itself"))  # still in maintenance for everyone else
