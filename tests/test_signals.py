"""Per-tenant migration signals, and ``post_migrate`` on tenant databases (docs/integrations.md, Signals).

``pre_tenant_migrate`` and ``tenant_migrated`` are sent around every path
that brings a tenant's database to the migration plan — a registration by
DDL, by cloning, ``migrate_tenant``, a fleet run that applies something —
with the tenant selected. ``post_migrate`` goes to the tenant's alias, as
Django's ``migrate`` sends it, so receivers that create rows where the
router lets their models live (contenttypes, permissions, a site's seed
data) fill tenant databases too.
"""

from __future__ import annotations

import contextlib

import pytest
from django.db.models.signals import post_migrate

from tenant_schema.context import current_tenant
from tenant_schema.lifecycle import migrate
from tenant_schema.lifecycle.archive import archive_tenant
from tenant_schema.lifecycle.fleet import migrate_tenants
from tenant_schema.migration_plan import migration_plan
from tenant_schema.signals import pre_tenant_migrate, tenant_migrated
from tenant_schema.testing import unique_slug
from tests.conftest import require_live_server
from tests.tenantapp.models import Category
from tests.test_provisioning_migrate import PINNED, old_tenants

SERVERS = ["sqlite", "pg", "pgschema", "mysql"]


@pytest.fixture(autouse=True)
def _registry(db_access):
    """Registration writes registry rows outside the test transaction."""


@contextlib.contextmanager
def received():
    """Every migration signal sent meanwhile, in order, with the tenant selected when it was sent."""
    seen: list[tuple] = []

    def pre(sender, tenant, plan, **kwargs):
        seen.append(("pre_tenant_migrate", tenant.slug, list(plan), getattr(current_tenant(), "slug", None)))

    def done(sender, tenant, applied, **kwargs):
        seen.append(("tenant_migrated", tenant.slug, list(applied), getattr(current_tenant(), "slug", None)))

    def post(sender, app_config, using, **kwargs):
        if app_config.label == "tenantapp":
            seen.append(("post_migrate", using, None, getattr(current_tenant(), "slug", None)))

    pre_tenant_migrate.connect(pre)
    tenant_migrated.connect(done)
    post_migrate.connect(post)
    try:
        yield seen
    finally:
        pre_tenant_migrate.disconnect(pre)
        tenant_migrated.disconnect(done)
        post_migrate.disconnect(post)


def labels(records) -> list[str]:
    return [f"{app}.{name}" for app, name in records]


@pytest.mark.parametrize("server", SERVERS)
def test_registration_sends_the_plan_then_what_it_applied_then_post_migrate(server, tenant_factory):
    require_live_server(server)
    slug = unique_slug("sig")
    with received() as seen:
        tenant = tenant_factory(slug, server=server)
    plan = migration_plan().records()
    assert seen == [
        ("pre_tenant_migrate", slug, plan, slug),
        ("tenant_migrated", slug, labels(plan), slug),
        ("post_migrate", tenant.database.alias, None, slug),
    ]


def seed_categories(sender, app_config, using, **kwargs):
    """A site's post_migrate receiver: default rows wherever the router lets ``Category`` live."""
    from django.db import router

    if app_config.label == "tenantapp" and router.allow_migrate_model(using, Category):
        Category.objects.using(using).get_or_create(name="uncategorised")


@pytest.mark.parametrize("server", SERVERS)
def test_post_migrate_receivers_fill_every_new_tenant_database_cloned_or_not(server, tenant_factory):
    """On PostgreSQL the second tenant is cloned from the template the first built: it is seeded too."""
    require_live_server(server)
    post_migrate.connect(seed_categories)
    try:
        first = tenant_factory(unique_slug("seed"), server=server)
        second = tenant_factory(unique_slug("seed"), server=server)
    finally:
        post_migrate.disconnect(seed_categories)
    for tenant in (first, second):
        assert list(Category.objects.using(tenant.database.alias).values_list("name", flat=True)) == ["uncategorised"]


def test_the_registry_database_is_not_seeded_by_tenant_post_migrate(tenant_factory):
    """The receiver acts only where the router lets the model live: never the registry's ``default``."""
    post_migrate.connect(seed_categories)
    try:
        tenant_factory(unique_slug("seed"), server="sqlite")
    finally:
        post_migrate.disconnect(seed_categories)
    from django.db import connections

    with connections["default"].cursor() as cursor:
        assert "tenantapp_category" not in connections["default"].introspection.table_names(cursor)


@pytest.mark.parametrize("server", ["sqlite", "pg", "mysql"])
def test_a_fleet_run_signals_each_tenant_it_migrates_and_none_it_skips(server, tenant_factory):
    require_live_server(server)
    behind, archived = old_tenants(tenant_factory, server, 2)
    archive_tenant(archived)  # archived tenants are kept current, and signalled like any other
    with received() as seen:
        report = migrate_tenants([behind.slug, archived.slug])
    assert report.ok
    for tenant in (behind, archived):
        mine = [event for event in seen if event[1] in (tenant.slug, tenant.database.alias)]
        assert mine == [
            ("pre_tenant_migrate", tenant.slug, [tuple(PINNED.split("."))], tenant.slug),
            ("tenant_migrated", tenant.slug, [PINNED], tenant.slug),
            ("post_migrate", tenant.database.alias, None, tenant.slug),
        ]
    with received() as seen:
        again = migrate_tenants([behind.slug, archived.slug])
    assert all(r.skipped and not r.connected for r in again.results)
    assert seen == []


def test_a_failed_migration_sends_no_tenant_migrated(tenant_factory, monkeypatch):
    (tenant,) = old_tenants(tenant_factory, "sqlite", 1)

    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(migrate, "create_tenant_tables", broken)
    with received() as seen:
        report = migrate_tenants([tenant.slug])
    assert [r.error for r in report.results] == ["RuntimeError: boom"]
    assert [event[0] for event in seen] == ["pre_tenant_migrate"]


class FailsOnce:
    """A seeding receiver that fails the first time (a deploy's bug, a lost connection), then seeds."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, sender, app_config, using, **kwargs):
        from django.db import router

        if app_config.label != "tenantapp" or not router.allow_migrate_model(using, Category):
            return
        self.calls += 1
        if self.calls == 1:
            raise RuntimeError("seeding failed")
        Category.objects.using(using).get_or_create(name="uncategorised")


def seeded(tenant) -> list[str]:
    return list(Category.objects.using(tenant.database.alias).values_list("name", flat=True))


@pytest.mark.parametrize("server", ["sqlite", "pg", "mysql"])
def test_a_failing_receiver_fails_the_registration_and_runs_again_when_it_resumes(server, tenant_factory):
    from tenant_schema import register_tenant
    from tenant_schema.models import Tenant

    require_live_server(server)
    receiver = FailsOnce()
    slug = unique_slug("seed")
    post_migrate.connect(receiver)
    try:
        with pytest.raises(RuntimeError, match="seeding failed"):
            tenant_factory(slug, server=server)
        assert Tenant.objects.get(slug=slug).status == Tenant.Status.FAILED
        tenant = register_tenant(slug, server=server)  # resumes: the tables are there, the seed is not
    finally:
        post_migrate.disconnect(receiver)
        tenant_factory(slug, server=server)  # purged after the test, whatever happened
    assert tenant.status == Tenant.Status.READY
    assert receiver.calls == 2 and seeded(tenant) == ["uncategorised"]


def test_a_failing_receiver_leaves_the_tenant_unrecorded_and_the_next_fleet_run_sends_again(tenant_factory):
    (tenant,) = old_tenants(tenant_factory, "sqlite", 1)
    receiver = FailsOnce()
    post_migrate.connect(receiver)
    try:
        first = migrate_tenants([tenant.slug])
        assert [r.error for r in first.results] == ["RuntimeError: seeding failed"]
        from tenant_schema.models import Tenant

        assert Tenant.objects.get(pk=tenant.pk).migrated_to != migration_plan().fingerprint, "not at the plan"
        second = migrate_tenants([tenant.slug])
    finally:
        post_migrate.disconnect(receiver)
    assert [r.error for r in second.results] == [None]
    assert receiver.calls == 2 and seeded(tenant) == ["uncategorised"]
    assert recorded_at_plan(tenant)


def recorded_at_plan(tenant) -> bool:
    from tenant_schema.models import Tenant

    return Tenant.objects.get(pk=tenant.pk).migrated_to == migration_plan().fingerprint
