"""The warm pool: provisioned, unassigned databases that a sign-up takes in one registry transaction."""

from __future__ import annotations

import json

import pytest
from django.conf import settings
from django.core.management import call_command
from django.db import connections
from django.test import override_settings
from django.test.utils import CaptureQueriesContext

from tenant_schema import ownership
from tenant_schema.context import tenant_context
from tenant_schema.exceptions import TenantNotFound
from tenant_schema.lifecycle.archive import purge_tenant
from tenant_schema.lifecycle.fleet import migrate_tenants
from tenant_schema.lifecycle.pool import drain_pool, fill_pool, pool_rows, pool_status
from tenant_schema.lifecycle.register import register_tenant
from tenant_schema.migration_plan import migration_plan
from tenant_schema.models import Tenant
from tenant_schema.names import POOL_SLUG_RE
from tenant_schema.registry import get_tenant, ready_tenants
from tenant_schema.testing import unique_slug
from tests.conftest import require_server
from tests.tenantapp.helpers import start_child
from tests.tenantapp.models import Note
from tests.test_fleet_state import tenant_connections_opened
from tests.test_provisioning_migrate import V1

POOL_SERVERS = ["sqlite", "pg", "pgschema", "mysql"]


def with_option(url: str, option: str) -> str:
    return url + ("&" if "?" in url else "?") + option


@pytest.fixture(params=POOL_SERVERS)
def pool_server(request, db_access):
    """A copy of a live server whose URL says ``pool=2``; its pool and tenants are dropped afterwards."""
    require_server(request.param)
    key = f"{request.param}pool"
    servers = {
        **settings.TENANT_SCHEMA["SERVERS"],
        key: with_option(settings.TENANT_SCHEMA["SERVERS"][request.param], "pool=2"),
    }
    with override_settings(TENANT_SCHEMA={**settings.TENANT_SCHEMA, "SERVERS": servers}):
        try:
            yield key
        finally:
            for connection in connections.all():
                connection.close()
            for tenant in Tenant.objects.filter(server=key).exclude(pk__in=pool_rows()):
                purge_tenant(tenant)
            drain_pool(key)
            assert not Tenant.objects.filter(server=key).exists()


def test_a_sign_up_takes_a_pooled_database_with_no_ddl_and_no_tenant_connection(pool_server):
    assert fill_pool(pool_server) == 2
    (status,) = pool_status(pool_server)
    assert (status.size, status.ready, status.stale, status.unfinished) == (2, 2, 0, 0)
    pooled = dict(Tenant.objects.filter(server=pool_server).values_list("database_name", "uid"))

    slug = unique_slug("signup")
    with tenant_connections_opened() as opened, CaptureQueriesContext(connections["default"]) as registry:
        tenant = register_tenant(slug, server=pool_server, name="Acme")
    assert opened == []  # neither the tenant's database nor the server was connected to
    assert len(registry.captured_queries) <= 6, registry.captured_queries
    assert tenant.status == Tenant.Status.READY and tenant.name == "Acme"
    assert pooled[tenant.database_name] == tenant.uid  # its marker was written when it was pooled
    assert tenant.migrated_to == migration_plan().fingerprint
    ownership.check_owner(tenant.database, tenant)
    with tenant_context(tenant):
        Note.objects.create(title="hello")
        assert list(Note.objects.values_list("title", flat=True)) == ["hello"]
    assert pool_status(pool_server)[0].ready == 1


def test_an_empty_pool_falls_back_to_creating_the_database(pool_server):
    fill_pool(pool_server)
    first, second, third = (register_tenant(unique_slug("signup"), server=pool_server) for _ in range(3))
    assert first.database_name.startswith(settings.TENANT_SCHEMA["DATABASE_PREFIX"] + "pool_")
    assert second.database_name.startswith(settings.TENANT_SCHEMA["DATABASE_PREFIX"] + "pool_")
    assert third.database_name == settings.TENANT_SCHEMA["DATABASE_PREFIX"] + third.slug.replace("-", "_")
    assert len({first.database_name, second.database_name, third.database_name}) == 3
    assert fill_pool(pool_server) == 2  # refilled off the request path


def test_pooled_databases_are_never_served(pool_server):
    fill_pool(pool_server)
    slug = Tenant.objects.filter(server=pool_server).values_list("slug", flat=True).first()
    with pytest.raises(TenantNotFound, match="reserved for the warm pool"):
        get_tenant(slug)
    assert ready_tenants.get(slug) is None
    with pytest.raises(ValueError, match="reserved for the warm pool"):
        register_tenant(slug, server=pool_server)


def test_the_pool_is_migrated_with_the_fleet_and_a_stale_pool_is_not_claimed(pool_server):
    with override_settings(MIGRATION_MODULES=V1):
        fill_pool(pool_server)
    status = pool_status(pool_server)[0]
    assert (status.ready, status.stale) == (0, 2)
    late = register_tenant(unique_slug("signup"), server=pool_server)  # never a database behind the plan
    assert not late.database_name.startswith(settings.TENANT_SCHEMA["DATABASE_PREFIX"] + "pool_")
    report = migrate_tenants()
    assert sum(1 for r in report.results if POOL_SLUG_RE.fullmatch(r.slug) and r.applied) == 2
    assert pool_status(pool_server)[0].ready == 2
    assert register_tenant(unique_slug("signup"), server=pool_server).database_name.startswith(
        settings.TENANT_SCHEMA["DATABASE_PREFIX"] + "pool_"
    )


def test_two_processes_signing_up_never_share_a_pooled_database(pool_server):
    fill_pool(pool_server)
    slugs = [unique_slug("signup") for _ in range(4)]
    children = [start_child(slug, pool_server) for slug in slugs]
    for child in children:
        out, err = child.communicate(timeout=180)
        assert child.returncode == 0, err
    tenants = [get_tenant(slug) for slug in slugs]
    assert all(t.status == Tenant.Status.READY for t in tenants)
    assert len({t.database_name for t in tenants}) == 4
    assert sum(t.database_name.startswith(settings.TENANT_SCHEMA["DATABASE_PREFIX"] + "pool_") for t in tenants) == 2


@pytest.mark.parametrize(
    "crash,after,module",
    [
        ("claim_pooled", False, "lifecycle.register"),  # before the claim
        ("_take", True, "lifecycle.pool"),  # the row updated, the transaction not committed
        ("claim_pooled", True, "lifecycle.register"),  # committed, the signal not sent
    ],
)
def test_a_crash_at_each_step_of_a_claim_leaves_one_owner_per_database(pool_server, crash, after, module):
    fill_pool(pool_server)
    slug = unique_slug("signup")
    child = start_child(slug, pool_server, crash=crash, after=after, module=module)
    child.communicate(timeout=180)
    assert child.returncode == 3
    rows = list(Tenant.objects.filter(server=pool_server).values_list("slug", "status", "database_name"))
    pooled = [r for r in rows if r[1] == Tenant.Status.POOLED]
    claimed = [r for r in rows if r[0] == slug]
    if crash == "claim_pooled" and after:
        assert len(pooled) == 1 and claimed[0][1] == Tenant.Status.READY
    else:
        assert len(pooled) == 2 and claimed == []
    tenant = register_tenant(slug, server=pool_server)  # the re-run finishes
    assert tenant.status == Tenant.Status.READY
    ownership.check_owner(tenant.database, tenant)
    assert pool_status(pool_server)[0].ready == 1
    names = [r[2] for r in Tenant.objects.filter(server=pool_server).values_list("slug", "status", "database_name")]
    assert len(names) == len(set(names)) == 2


@pytest.mark.parametrize("crash,after", [("provision", False), ("provision", True), ("_mark_or_undo", True)])
def test_a_fill_killed_half_way_is_finished_by_the_next_fill(pool_server, crash, after):
    child = start_child("unused", pool_server, crash=crash, after=after, call="fill_pool")
    child.communicate(timeout=180)
    assert child.returncode == 3
    status = pool_status(pool_server)[0]
    assert (status.ready, status.unfinished) == (0, 1)  # never pooled, so never claimed
    late = register_tenant(unique_slug("signup"), server=pool_server)
    assert late.database_name == settings.TENANT_SCHEMA["DATABASE_PREFIX"] + late.slug.replace("-", "_")
    assert fill_pool(pool_server) == 2  # the unfinished one, then one more
    status = pool_status(pool_server)[0]
    assert (status.ready, status.unfinished) == (2, 0)


def test_the_tenant_pool_command_fills_shows_and_drains(pool_server, capsys):
    call_command("tenant_pool", server=pool_server)
    assert "Provisioned 2 pooled database(s)." in capsys.readouterr().out
    call_command("tenant_pool", server=pool_server, status=True, json=True)
    (shown,) = json.loads(capsys.readouterr().out)
    assert shown == {"server": pool_server, "size": 2, "ready": 2, "stale": 0, "unfinished": 0, "missing": 0}
    call_command("tenant_pool", server=pool_server, drain=True)
    assert "Dropped 2 pooled database(s) and" in capsys.readouterr().out
    assert pool_status(pool_server)[0].ready == 0


def test_listings_leave_the_pool_out_unless_asked(pool_server, capsys):
    fill_pool(pool_server)
    tenant = register_tenant(unique_slug("signup"), server=pool_server)
    call_command("tenant_list", json=True)
    listed = {row["slug"] for row in json.loads(capsys.readouterr().out)}
    assert tenant.slug in listed and not any(POOL_SLUG_RE.fullmatch(slug) for slug in listed)
    call_command("tenant_list", json=True, pooled=True)
    pooled = [row for row in json.loads(capsys.readouterr().out) if POOL_SLUG_RE.fullmatch(row["slug"])]
    assert [row["status"] for row in pooled] == ["pooled"]
