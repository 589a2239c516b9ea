"""New databases are cloned from a per-server template at the current migration plan, where the engine can."""

from __future__ import annotations

import pytest
from django.conf import settings
from django.test import override_settings

from tenant_schema import ownership
from tenant_schema.databases import TenantDatabase
from tenant_schema.lifecycle import clone
from tenant_schema.lifecycle.archive import purge_tenant
from tenant_schema.lifecycle.clone import drop_clone_templates, template_name
from tenant_schema.lifecycle.register import register_tenant
from tenant_schema.migration_plan import migration_plan
from tenant_schema.models import Tenant
from tenant_schema.servers import get_server
from tenant_schema.testing import unique_slug
from tests.conftest import require_server
from tests.tenantapp.helpers import start_child, tables, unapplied
from tests.test_provisioning_migrate import has_pinned

CLONING = ["sqlite", "pg"]  # the engines that copy a database: PostgreSQL TEMPLATE, SQLite's backup API


@pytest.fixture(params=CLONING)
def cloning_server(request, db_access):
    require_server(request.param)
    made: list[str] = []
    yield request.param, made
    for slug in made:
        tenant = Tenant.objects.filter(slug=slug).first()
        if tenant is not None:
            tenant.database.close()
            purge_tenant(tenant)


def template_marker(key: str):
    server = get_server(key)
    template = TenantDatabase("clone-template", server, template_name(server))
    try:
        return ownership.read_marker(template) if template.exists() else None
    finally:
        template.close()


def drop_template(key: str) -> None:
    drop_clone_templates(key)


def test_a_new_tenant_is_a_clone_of_the_template_and_its_own(cloning_server, monkeypatch):
    key, made = cloning_server
    built = []
    original = clone._build_template
    monkeypatch.setattr(clone, "_build_template", lambda *a, **k: built.append(1) or original(*a, **k))
    first, second = (register_tenant(unique_slug("clone"), server=key) for _ in range(2))
    made += [first.slug, second.slug]
    marker = template_marker(key)
    assert marker.origin == ownership.TEMPLATE_ORIGIN and marker.tenant_uid == migration_plan().fingerprint
    assert len(built) <= 1  # built at most once (it may exist from an earlier test)
    for tenant in (first, second):
        own = ownership.read_marker(tenant.database)
        assert (own.tenant_uid, own.origin, own.slug) == (tenant.uid.hex, "created", tenant.slug)
        assert not unapplied(tenant) and has_pinned(tenant)
        assert {"tenantapp_note", "audit_event"} <= tables(tenant)


def test_a_template_of_an_older_plan_is_replaced(cloning_server):
    key, made = cloning_server
    with override_settings(TENANT_SCHEMA={**settings.TENANT_SCHEMA, "TENANT_TABLES": []}):
        old = register_tenant(unique_slug("clone"), server=key)
        made.append(old.slug)
        assert template_marker(key).tenant_uid == migration_plan().fingerprint
        assert "audit_event" not in tables(old)
    new = register_tenant(unique_slug("clone"), server=key)
    made.append(new.slug)
    assert template_marker(key).tenant_uid == migration_plan().fingerprint
    assert "audit_event" in tables(new) and not unapplied(new)


def test_a_missing_template_is_rebuilt_and_cloning_can_be_turned_off(cloning_server):
    key, made = cloning_server
    drop_template(key)
    tenant = register_tenant(unique_slug("clone"), server=key)  # falls back, or rebuilds
    made.append(tenant.slug)
    assert not unapplied(tenant)
    with override_settings(TENANT_SCHEMA={**settings.TENANT_SCHEMA, "CLONE_TEMPLATES": False}):
        drop_template(key)
        plain = register_tenant(unique_slug("clone"), server=key)
        made.append(plain.slug)
        assert template_marker(key) is None and not unapplied(plain)


def test_engines_that_cannot_copy_a_database_build_it(db_access):
    for key in ("mysql", "pgschema"):
        server = get_server(key)
        assert not clone.can_clone(server, migration_plan())


@pytest.mark.parametrize(
    "crash,after,module",
    [
        ("clone_into", False, "lifecycle.provision"),  # nothing cloned yet
        ("clone_into", True, "lifecycle.provision"),  # cloned, still carrying the template's marker
        ("rewrite_marker", True, "ownership"),  # cloned and marked, nothing recorded in the registry
        ("_build_template", False, "lifecycle.clone"),  # the template not built yet
        ("_write_template_marker", True, "lifecycle.clone"),  # the template built, not renamed into place
    ],
)
def test_a_crash_at_each_step_of_a_clone_is_never_ready_and_a_rerun_completes(cloning_server, crash, after, module):
    key, made = cloning_server
    if crash in ("_build_template", "_write_template_marker"):
        drop_template(key)
    slug = unique_slug("clonecrash")
    made.append(slug)
    child = start_child(slug, key, crash=crash, after=after, module=module)
    _, err = child.communicate(timeout=180)
    assert child.returncode == 3, err
    assert Tenant.objects.get(slug=slug).status == Tenant.Status.PROVISIONING
    tenant = register_tenant(slug, server=key)
    assert tenant.status == Tenant.Status.READY
    ownership.check_owner(tenant.database, tenant)
    assert not unapplied(tenant) and "audit_event" in tables(tenant)


def test_a_clone_of_another_plans_template_is_migrated_not_recorded_as_current(cloning_server):
    """Another process rebuilds the template at its own plan while this one trusts its cached check."""
    key, made = cloning_server
    first = register_tenant(unique_slug("clone"), server=key)  # this process verifies the template
    made.append(first.slug)
    other_plan = {**settings.TENANT_SCHEMA, "TENANT_TABLES": []}
    slug = unique_slug("clone")
    made.append(slug)
    child = start_child(slug, key, tenant_schema=other_plan)  # rebuilds the template without audit_event
    _, err = child.communicate(timeout=180)
    assert child.returncode == 0, err
    assert template_marker(key).tenant_uid != migration_plan().fingerprint
    tenant = register_tenant(unique_slug("clone"), server=key)  # clones the other plan's template
    made.append(tenant.slug)
    assert "audit_event" in tables(tenant) and not unapplied(tenant)
    assert Tenant.objects.get(pk=tenant.pk).migrated_to == migration_plan().fingerprint
