"""migrate_tenants: skip what is up to date, apply what is pending, keep going past failures."""

from __future__ import annotations

import pytest
from django.db import connections
from django.test import override_settings

from tenant_schema.exceptions import TenantNotFound
from tenant_schema.lifecycle.archive import archive_tenant
from tenant_schema.lifecycle.fleet import migrate_tenants
from tenant_schema.lifecycle.migrate import migrate_tenant
from tenant_schema.testing import unique_slug
from tests.tenantapp.helpers import unapplied
from tests.tenantapp.models import Note

V1 = {"tenantapp": "tests.tenantapp.migrations_v1"}
PINNED = "tenantapp.0002_note_pinned"


def old_tenants(tenant_factory, server: str, count: int):
    """Tenants created when only migration 0001 existed."""
    with override_settings(MIGRATION_MODULES=V1):
        return [tenant_factory(unique_slug("fleet"), server=server) for _ in range(count)]


def has_pinned(tenant) -> bool:
    connection = tenant.database.connection
    with connection.cursor() as cursor:
        return "pinned" in {c.name for c in connection.introspection.get_table_description(cursor, "tenantapp_note")}


@pytest.mark.django_db
def test_pending_migrations_are_applied_then_skipped(server_key, tenant_factory):
    tenants = old_tenants(tenant_factory, server_key, 2)
    seen = []
    report = migrate_tenants([t.slug for t in tenants], progress=seen.append)
    assert report.ok and report.failures == []
    assert sorted(r.slug for r in report.results) == sorted(t.slug for t in tenants)
    assert all(r.applied == [PINNED] and not r.skipped for r in report.results)
    assert seen == report.results
    for tenant in tenants:
        assert has_pinned(tenant) and not unapplied(tenant)
    again = migrate_tenants([t.slug for t in tenants])
    assert all(r.skipped and r.applied == [] for r in again.results)


@pytest.mark.django_db
def test_all_ready_and_archived_tenants_by_default(tenant_factory):
    ready, archived = old_tenants(tenant_factory, "sqlite", 2)
    archive_tenant(archived)
    report = migrate_tenants()
    assert {r.slug: r.applied for r in report.results} == {ready.slug: [PINNED], archived.slug: [PINNED]}


@pytest.mark.django_db
def test_a_failing_tenant_does_not_stop_the_others(server_key, tenant_factory):
    bad, good1, good2 = old_tenants(tenant_factory, server_key, 3)
    connection = bad.database.connection  # make 0002 fail there: its table is gone
    with connection.schema_editor() as editor:
        editor.delete_model(Note.tags.through)
        editor.delete_model(Note)
    report = migrate_tenants([bad.slug, good1.slug, good2.slug])
    assert not report.ok
    assert [f.slug for f in report.failures] == [bad.slug]
    assert "tenantapp_note" in report.failures[0].error
    assert {r.slug: r.applied for r in report.results if r.error is None} == {
        good1.slug: [PINNED],
        good2.slug: [PINNED],
    }


@pytest.mark.django_db(transaction=True)
def test_parallel_jobs_in_worker_processes(tenant_factory, capsys, monkeypatch):
    from tenant_schema.lifecycle import fleet

    monkeypatch.setattr(fleet, "MIN_TENANTS_PER_WORKER", 1)  # a worker even for three tenants
    require = old_tenants(tenant_factory, "sqlite", 3)
    up_to_date = tenant_factory(unique_slug("fleet"), server="sqlite")
    report = migrate_tenants([t.slug for t in require] + [up_to_date.slug], jobs=2, progress=True)
    assert report.ok, report.failures
    by_slug = {r.slug: r for r in report.results}
    assert by_slug[up_to_date.slug].skipped
    assert all(by_slug[t.slug].applied == [PINNED] for t in require)
    assert all(has_pinned(t) for t in require)
    assert "migrating" in capsys.readouterr().err


@pytest.mark.django_db
def test_connections_are_closed_and_aliases_forgotten(tenant_factory):
    from tenant_schema.databases import close_tenant_connections

    tenants = old_tenants(tenant_factory, "sqlite", 2)
    close_tenant_connections()
    for tenant in tenants:
        from tenant_schema import databases

        databases.unregister_alias(tenant.database.alias)
    migrate_tenants([t.slug for t in tenants])
    assert not any(t.database.alias in connections.settings for t in tenants)


@pytest.mark.django_db
def test_unknown_slug_fails_before_any_work(tenant_factory):
    (tenant,) = old_tenants(tenant_factory, "sqlite", 1)
    with pytest.raises(TenantNotFound, match="no tenant 'nope-nope' is registered"):
        migrate_tenants([tenant.slug, "nope-nope"])
    assert unapplied(tenant)


@pytest.mark.django_db
def test_migrate_tenant_returns_the_applied_labels(tenant_factory):
    (tenant,) = old_tenants(tenant_factory, "sqlite", 1)
    assert migrate_tenant(tenant) == [PINNED]
    assert migrate_tenant(tenant) == []


@pytest.mark.django_db
def test_jobs_must_be_positive():
    with pytest.raises(ValueError, match="jobs must be at least 1"):
        migrate_tenants([], jobs=0)
