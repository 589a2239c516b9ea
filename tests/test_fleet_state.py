"""The registry knows each tenant's migration state, so a fleet migration with nothing to apply
costs one registry query and opens no tenant connection; and a fleet migration never hangs."""

from __future__ import annotations

import contextlib
import threading
import time

import psycopg
import pytest
from django.conf import settings
from django.core.management import call_command
from django.db import connections
from django.db.backends.signals import connection_created
from django.db.migrations.executor import MigrationExecutor
from django.db.migrations.recorder import MigrationRecorder
from django.test.utils import CaptureQueriesContext

from tenant_schema.aliases import ALIAS_PREFIX, INTERNAL_ALIAS_PREFIX
from tenant_schema.databases import close_tenant_connections
from tenant_schema.exceptions import TenantNotFound
from tenant_schema.lifecycle import fleet, register
from tenant_schema.lifecycle.fleet import migrate_tenants
from tenant_schema.lifecycle.migrate import migrate_tenant
from tenant_schema.migration_plan import migration_plan
from tenant_schema.models import Tenant
from tenant_schema.signals import pre_tenant_migrate
from tenant_schema.testing import unique_slug
from tests.test_provisioning_migrate import PINNED, has_pinned, old_tenants


@pytest.fixture(autouse=True)
def _registry(db_access):
    """Every test here writes registry rows from threads or processes: transaction tests."""


@contextlib.contextmanager
def tenant_connections_opened():
    """The aliases of every tenant (or server-level) connection opened meanwhile, in any thread."""
    opened: list[str] = []

    def record(sender, connection, **kwargs):
        if connection.alias.startswith((ALIAS_PREFIX, INTERNAL_ALIAS_PREFIX)):
            opened.append(connection.alias)

    connection_created.connect(record)
    try:
        yield opened
    finally:
        connection_created.disconnect(record)


def recorded(tenant) -> str:
    return Tenant.objects.get(pk=tenant.pk).migrated_to


def test_registration_records_the_plan_it_brought_the_tenant_to(server_key, tenant_factory):
    tenant = tenant_factory(unique_slug("fleet"), server=server_key)
    assert recorded(tenant) == migration_plan().fingerprint


def test_nothing_to_apply_costs_one_registry_query_and_no_tenant_connection(server_key, tenant_factory):
    tenants = [tenant_factory(unique_slug("fleet"), server=server_key) for _ in range(3)]
    close_tenant_connections()
    with tenant_connections_opened() as opened, CaptureQueriesContext(connections["default"]) as registry:
        report = migrate_tenants()
    assert opened == []
    assert len(registry.captured_queries) == 1, registry.captured_queries
    assert sorted(r.slug for r in report.results) == sorted(t.slug for t in tenants)
    assert all(r.skipped and not r.connected and r.error is None for r in report.results)


def test_named_tenants_cost_one_registry_query_per_500_and_unknown_ones_are_named(tenant_factory, monkeypatch):
    tenants = [tenant_factory(unique_slug("fleet"), server="sqlite") for _ in range(3)]
    slugs = [t.slug for t in tenants]
    with CaptureQueriesContext(connections["default"]) as registry:
        report = migrate_tenants(slugs)
    assert len(registry.captured_queries) == 1 and [r.slug for r in report.results] == slugs
    monkeypatch.setattr("tenant_schema.registry.SLUGS_PER_QUERY", 2)
    with CaptureQueriesContext(connections["default"]) as registry:
        migrate_tenants(slugs)
    assert len(registry.captured_queries) == 2
    with pytest.raises(TenantNotFound, match="no tenant 'nobody-here', 'nor-here' is registered"):
        migrate_tenants([slugs[0], "nobody-here", "nor-here"])
    with pytest.raises(TenantNotFound, match="'Bad Slug': invalid tenant slug"):
        migrate_tenants([slugs[0], "Bad Slug"])


def test_the_server_sees_no_session_when_nothing_is_to_apply(tenant_factory, db_access):
    """PostgreSQL refuses every connection to the tenants' databases: the fleet run still succeeds."""
    tenants = [tenant_factory(unique_slug("fleet"), server="pg") for _ in range(3)]
    for tenant in tenants:
        tenant.database.close_everywhere()
    url = settings.TENANT_SCHEMA["SERVERS"]["pg"].rstrip("/") + "/postgres"
    with psycopg.connect(url, autocommit=True) as admin:
        names = [tenant.database_name for tenant in tenants]
        for name in names:
            admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
        try:
            report = migrate_tenants([t.slug for t in tenants])
            assert report.ok and all(r.skipped and not r.connected for r in report.results)
            verified = migrate_tenants([t.slug for t in tenants], verify=True)  # --verify does connect
            assert [r.slug for r in verified.failures] == [t.slug for t in tenants]
            assert all("not currently accepting connections" in r.error for r in verified.failures)
        finally:
            for name in names:
                admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')


def test_tenants_from_before_the_fingerprint_are_checked_once_then_skipped(tenant_factory):
    tenants = [tenant_factory(unique_slug("fleet"), server="sqlite") for _ in range(2)]
    Tenant.objects.filter(pk__in=[t.pk for t in tenants]).update(migrated_to="")  # as after upgrading
    first = migrate_tenants()
    assert all(r.skipped and r.connected for r in first.results)
    assert all(recorded(t) == migration_plan().fingerprint for t in tenants)
    second = migrate_tenants()
    assert all(r.skipped and not r.connected for r in second.results)


def test_a_migrated_tenant_is_recorded_at_the_new_plan(server_key, tenant_factory):
    tenants = old_tenants(tenant_factory, server_key, 2)
    assert all(recorded(t) not in ("", migration_plan().fingerprint) for t in tenants)
    report = migrate_tenants([t.slug for t in tenants])
    assert all(r.applied == [PINNED] for r in report.results)
    assert all(recorded(t) == migration_plan().fingerprint for t in tenants)
    with tenant_connections_opened() as opened:
        again = migrate_tenants([t.slug for t in tenants])
    assert opened == [] and all(not r.connected for r in again.results)


def test_verify_finds_a_tenant_changed_behind_the_registrys_back(server_key, tenant_factory):
    tenant = tenant_factory(unique_slug("fleet"), server=server_key)
    executor = MigrationExecutor(tenant.database.connection)
    executor.migrate([("tenantapp", "0001_initial")])  # Django directly, not through tenant-schema
    assert not has_pinned(tenant)
    trusted = migrate_tenants([tenant.slug])
    assert trusted.results[0].skipped and not trusted.results[0].connected  # the registry cannot know
    verified = migrate_tenants([tenant.slug], verify=True)
    assert [r.slug for r in verified.drifted] == [tenant.slug]
    assert verified.results[0].applied == [PINNED] and has_pinned(tenant)
    assert recorded(tenant) == migration_plan().fingerprint


@pytest.mark.parametrize("drifted", [True, False], ids=["registry-at-the-plan", "registry-at-an-older-plan"])
def test_a_failed_migration_never_leaves_the_registry_at_the_plan(tenant_factory, drifted):
    if drifted:  # the registry says "at the plan"; the database lost 0002's record behind its back
        tenant = tenant_factory(unique_slug("fleet"), server="pg")
        assert recorded(tenant) == migration_plan().fingerprint
        MigrationRecorder(tenant.database.connection).record_unapplied(*PINNED.split("."))
    else:  # an ordinary tenant behind the plan, its 0002 column made by hand
        [tenant] = old_tenants(tenant_factory, "pg", 1)
        before = recorded(tenant)
        with tenant.database.connection.cursor() as cursor:
            cursor.execute("ALTER TABLE tenantapp_note ADD COLUMN pinned boolean NOT NULL DEFAULT false")
    with pytest.raises(Exception, match="already exists"):  # 0002 adds a column the table has
        migrate_tenant(Tenant.objects.get(pk=tenant.pk))
    assert recorded(tenant) == ("" if drifted else before), "never the current plan's fingerprint"
    assert migrate_tenants([tenant.slug]).results[0].connected, "the next fleet run checks it"


def test_verify_in_the_command_reports_drift(tenant_factory, capsys):
    tenant = tenant_factory(unique_slug("fleet"), server="sqlite")
    MigrationExecutor(tenant.database.connection).migrate([("tenantapp", "0001_initial")])
    call_command("tenant_migrate", tenant.slug, verify=True, progress=False)
    err = capsys.readouterr().err
    assert f"{tenant.slug}: drift" in err


def test_djangos_migrate_on_a_tenant_alias_keeps_the_registry_truthful(tenant_factory):
    tenant = tenant_factory(unique_slug("fleet"), server="sqlite")
    call_command("migrate", "tenantapp", "0001", database=tenant.database.alias, verbosity=0)
    assert recorded(tenant) == ""  # behind the plan: the next fleet run connects to it
    report = migrate_tenants([tenant.slug])
    assert report.results[0].applied == [PINNED]
    call_command("migrate", "tenantapp", "0001", database=tenant.database.alias, verbosity=0)
    call_command("migrate", database=tenant.database.alias, verbosity=0)
    assert recorded(tenant) == migration_plan().fingerprint


def test_more_tenants_than_workers_times_tasks_per_worker_never_hangs(tenant_factory, monkeypatch):
    """Seen: with max_tasks_per_child, 200 tenants over 2 workers stopped at 100 and waited for ever."""
    monkeypatch.setattr(fleet, "TASKS_PER_WORKER", 2)
    monkeypatch.setattr(fleet, "MIN_TENANTS_PER_WORKER", 1)
    tenants = old_tenants(tenant_factory, "sqlite", 12)  # 12 > 1 worker x 2 tasks (and this process)
    outcome: dict = {}
    worker = threading.Thread(
        target=lambda: outcome.setdefault("report", migrate_tenants([t.slug for t in tenants], jobs=2)),
        daemon=True,
    )
    worker.start()
    worker.join(timeout=300)
    assert not worker.is_alive(), "migrate_tenants(jobs=2) did not finish"
    report = outcome["report"]
    assert report.ok, report.failures
    assert sorted(r.slug for r in report.results if r.applied == [PINNED]) == sorted(t.slug for t in tenants)


def test_a_worker_killed_mid_run_fails_its_tenants_and_the_run_still_ends(tenant_factory, monkeypatch):
    import multiprocessing
    import os
    import signal
    import time

    monkeypatch.setattr(fleet, "MIN_TENANTS_PER_WORKER", 1)
    tenants = old_tenants(tenant_factory, "sqlite", 12)
    outcome: dict = {}
    run = threading.Thread(
        target=lambda: outcome.setdefault("report", migrate_tenants([t.slug for t in tenants], jobs=2)),
        daemon=True,
    )
    run.start()
    deadline = time.monotonic() + 60
    while not multiprocessing.active_children() and run.is_alive() and time.monotonic() < deadline:
        time.sleep(0.005)
    killed = [child.pid for child in multiprocessing.active_children()]
    for pid in killed:
        os.kill(pid, signal.SIGKILL)
    run.join(timeout=300)
    assert not run.is_alive(), "migrate_tenants(jobs=2) waited on a dead worker"
    report = outcome["report"]
    assert sorted(r.slug for r in report.results) == sorted(t.slug for t in tenants), "one result per tenant"
    assert killed, "a worker process was started"
    assert all(r.error is None or r.error.startswith("worker process failed") for r in report.results)
    assert any(r.applied == [PINNED] for r in report.results), "this process migrated its share meanwhile"
    again = migrate_tenants([t.slug for t in tenants], jobs=2)
    assert again.ok, again.failures
    assert all(recorded(t) == migration_plan().fingerprint and has_pinned(t) for t in tenants)


def test_a_tenant_that_kills_its_worker_fails_alone_after_one_retry(tenant_factory, monkeypatch):
    from tests.tenantapp.apps import KILL_WORKER_ENV

    monkeypatch.setattr(fleet, "MIN_TENANTS_PER_WORKER", 1)
    monkeypatch.setattr(fleet, "TASKS_PER_WORKER", 4)
    tenants = old_tenants(tenant_factory, "sqlite", 30)
    doomed = tenants[0]  # the first a worker gets: this process takes from the other end
    monkeypatch.setenv(KILL_WORKER_ENV, doomed.slug)

    def slow_here(sender, tenant, **kwargs):  # this process only (workers do not have the receiver)
        time.sleep(0.1)  # so the worker is up long before this process reaches the doomed tenant

    pre_tenant_migrate.connect(slow_here)
    try:
        report = migrate_tenants([t.slug for t in tenants], jobs=2)
    finally:
        pre_tenant_migrate.disconnect(slow_here)
    by_slug = {r.slug: r for r in report.results}
    assert sorted(by_slug) == sorted(t.slug for t in tenants) and len(report.results) == len(tenants)
    assert {r.slug: r.error for r in report.failures} == {
        doomed.slug: "worker process failed twice: BrokenProcessPool: A process in the process pool was "
        "terminated abruptly while the future was running or pending."
    }
    assert all(by_slug[t.slug].applied == [PINNED] for t in tenants[1:]), "the others its pools held: retried"
    monkeypatch.delenv(KILL_WORKER_ENV)
    assert migrate_tenants([doomed.slug]).ok and has_pinned(doomed)


def test_a_fleet_too_small_to_pay_for_a_worker_is_migrated_in_this_process(tenant_factory, monkeypatch):
    def no_workers(count):
        raise AssertionError(f"{count} worker processes started for two tenants")

    monkeypatch.setattr(fleet, "_worker_pool", no_workers)
    tenants = old_tenants(tenant_factory, "sqlite", 2)  # fewer than MIN_TENANTS_PER_WORKER
    report = migrate_tenants([t.slug for t in tenants], jobs=2)
    assert report.ok and all(r.applied == [PINNED] for r in report.results)


def test_a_tenant_being_moved_is_not_migrated_until_the_move_is_done(tenant_factory):
    """From a review of tenant_move: a migration applied to the source while it is copied could miss the copy."""
    [tenant] = old_tenants(tenant_factory, "sqlite", 1)
    move = Tenant.objects.create(
        slug="move-00000000000000aa", server="pg", database_name="tstest_move_aa", status="moving", copy_of=tenant.uid
    )
    try:
        [result] = migrate_tenants([tenant.slug]).results
        assert "being moved" in result.error and not result.connected and not has_pinned(tenant)
    finally:
        move.delete()
    assert migrate_tenants([tenant.slug]).results[0].applied == [PINNED]


def test_registering_with_a_reserved_pool_slug_is_refused(db_access):
    with pytest.raises(ValueError, match="reserved for the warm pool"):
        register.register_tenant("pool-0123456789abcdef")
