"""Migrating one tenant, and the migration state the registry keeps for it.

``migrate_tenant`` applies the pending migrations with Django's executor
inside the tenant's context (``RunPython`` code that uses the default
manager reaches the tenant's database; writes are allowed in maintenance
mode), in one transaction where the dialect can, sharing one migration
graph and one rendered project state per history in this process. The
registry records each tenant's migration state (``Tenant.migrated_to``, the
plan's fingerprint): written only when everything, the ``TENANT_TABLES``
and the signals' receivers included, has succeeded, and cleared before
anything is applied if it already named the current plan (the database
drifted behind the registry), so a crash half-way leaves a row the next
fleet run checks.

``_announcing`` and ``_migrated`` send the migration signals
(``pre_tenant_migrate``, ``tenant_migrated``, then Django's ``post_migrate``
on the tenant's alias) around any path that builds or migrates a tenant's
database, before the registry records it at the plan.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterable
from typing import Any

from django.core.management.sql import emit_post_migrate_signal
from django.db import transaction

from .. import databases, django_private, registry
from ..migration_plan import Key, migration_plan
from ..models import Tenant
from ..signals import pre_tenant_migrate, tenant_migrated
from .build import applied_migrations, create_tenant_tables

__all__ = ["migrate_tenant", "record_migration_state", "refresh_migration_state"]


def migrate_tenant(tenant: Tenant, *, recorded: set[Key] | None = None) -> list[str]:
    """Apply the pending migrations to one tenant; the ``app.name`` labels applied.

    Runs inside the tenant's context, so ``RunPython`` code that uses the
    default manager reaches the tenant's database. Records the plan's
    fingerprint on the tenant's row when it succeeds (a row that named the
    plan already is cleared first), so a crash half-way leaves a row the
    next fleet run checks. ``recorded``: the keys of the database's
    ``django_migrations`` rows, when the caller has just read them
    (``build.applied_migrations``), so they are not read again.
    """
    tenant_db = tenant.database
    applied: list[str] = []

    whole = False

    def progress(action, migration=None, fake=False):
        if action == "apply_success":
            applied.append(f"{migration.app_label}.{migration.name}")
            if whole:
                # As if committed between migrations: deferred foreign-key checks fire now, so
                # a data migration followed by an ALTER TABLE works as under Django's migrate.
                tenant_db.connection.check_constraints()

    # Archived and half-registered tenants too (no status check), and writes from
    # RunPython code even in maintenance mode: the usual "on, migrate, off" routine.
    token = registry.activate(tenant, maintenance_writes=True)
    try:
        loader, states = _shared_graph()
        executor = django_private.migration_executor(tenant_db.connection, progress, loader=loader, applied=recorded)
        targets = executor.loader.graph.leaf_nodes()
        plan = executor.migration_plan(targets)
        state = None
        if plan and loader is not None:  # tenants with one history share one rendered state
            history = frozenset(executor.loader.applied_migrations)
            with _graphs_lock:
                rendered = states.get(history)
                if rendered is None:
                    if len(states) >= 8:
                        states.clear()
                    rendered = states[history] = django_private.applied_project_state(executor)
                state = rendered.clone()
        pre_tenant_migrate.send(
            sender=Tenant, tenant=tenant, plan=[(m.app_label, m.name) for m, backwards in plan if not backwards]
        )
        if plan:
            # The registry must not say "at the plan" while the plan is half-applied. It
            # says so only when the database drifted behind it: then the state is cleared
            # first. Otherwise it names an older plan already, and the UPDATE matches no
            # row (no registry write, no commit to flush).
            forget_migration_state(tenant, migration_plan().fingerprint)
        # Where DDL rolls back, one transaction around the whole plan: Django
        # records a migration with deferred SQL only after its own block
        # commits, so a connection lost in between would leave it applied
        # but unrecorded. Non-atomic migrations keep Django's own handling.
        whole = (
            tenant_db.dialect.can_migrate_in_one_transaction
            and tenant_db.can_rollback_ddl
            and all(migration.atomic for migration, _ in plan)
        )
        try:
            with transaction.atomic(using=tenant_db.alias) if whole else contextlib.nullcontext():
                executor.migrate(targets, plan=plan, state=state)
        except Exception as exc:
            # A failure inside the schema editor's exit can leave this thread's
            # connection marked "in a transaction" on a dead socket: drop it,
            # so the next use of the tenant connects afresh.
            databases.discard_connection(tenant_db.alias)
            if not tenant_db.can_rollback_ddl:
                failed = next(
                    (f"{m.app_label}.{m.name}" for m, _ in plan if f"{m.app_label}.{m.name}" not in applied),
                    "a migration",
                )
                exc.partly_applied = (  # type: ignore[attr-defined] - read by the fleet report
                    f"{tenant_db.dialect.name} cannot roll DDL back, so {failed} may be partly applied: "
                    "compare the database with `manage.py sqlmigrate`, finish or undo it by hand, then "
                    "record it with `migrate --fake`"
                )
            raise
        create_tenant_tables(tenant_db)
        _migrated(tenant, applied)  # before the fingerprint: a failing receiver is retried by the next run
        record_migration_state(tenant, migration_plan().fingerprint)
    finally:
        registry.deactivate(token)
    return applied


_graphs: dict[str, Any] = {}
_graphs_lock = threading.Lock()


def _shared_graph() -> tuple[Any, dict]:
    """This process's migration loader and rendered states, for the current plan (rebuilt when it changes).

    The loader is ``None`` when the project has squashed migrations: then
    each tenant gets Django's own executor, whose graph depends on its history.
    """
    plan = migration_plan()
    if _graphs.get("plan") is not plan:
        _graphs.clear()
        _graphs.update(plan=plan, loader=django_private.migration_loader(), states={})
    return _graphs["loader"], _graphs["states"]


def record_migration_state(tenant: Tenant, fingerprint: str) -> None:
    """Write ``fingerprint`` as the tenant's migration state, if the row still points at this database.

    One UPDATE on the registry, keyed on the tenant's location, so a row
    that moved meanwhile keeps its own state. An empty fingerprint means
    "unknown": the next fleet migration connects to the tenant to find out.
    """
    Tenant.objects.filter(slug=tenant.slug, server=tenant.server, database_name=tenant.database_name).update(
        migrated_to=fingerprint
    )
    tenant.migrated_to = fingerprint


def forget_migration_state(tenant: Tenant, fingerprint: str) -> None:
    """Clear the tenant's migration state where the registry records ``fingerprint``, and only there."""
    Tenant.objects.filter(
        slug=tenant.slug, server=tenant.server, database_name=tenant.database_name, migrated_to=fingerprint
    ).update(migrated_to="")
    tenant.migrated_to = ""


def refresh_migration_state(tenant: Tenant) -> bool:
    """Ask the tenant's database what it has applied and record it; True when it is at the plan.

    For paths that change a tenant's schema outside ``migrate_tenant``
    (Django's ``migrate --database tenant:<slug>``).
    """
    plan = migration_plan()
    current = not plan.pending(applied_migrations(tenant.database) or set())
    if current:
        create_tenant_tables(tenant.database)  # the fingerprint covers TENANT_TABLES too
    record_migration_state(tenant, plan.fingerprint if current else "")
    return current


@contextlib.contextmanager
def _announcing(tenant: Tenant, records: Iterable[Key], *, post_migrate: bool = False):
    """Send the migration signals around building ``tenant``'s database at the plan (``records``).

    The tenant is selected while receivers run (whatever its status), so a
    receiver seeding rows uses the default manager. ``post_migrate`` goes to
    the tenant's alias, as Django's ``migrate`` sends it: its receivers
    (contenttypes, permissions, the site's own) act where the router lets
    their models live. They run before the registry records the tenant as
    ready at the plan: a receiver that fails leaves it unrecorded, and the
    next attempt sends them again.
    """
    records = list(records)
    token = registry.activate(tenant, maintenance_writes=True)
    try:
        pre_tenant_migrate.send(sender=Tenant, tenant=tenant, plan=records)
        yield
        _migrated(tenant, [f"{app}.{name}" for app, name in records], post_migrate=post_migrate)
    finally:
        registry.deactivate(token)


def _migrated(tenant: Tenant, applied: list[str], *, post_migrate: bool = False) -> None:
    """``tenant_migrated``, then ``post_migrate`` on the tenant's alias (when anything was applied, or asked)."""
    tenant_migrated.send(sender=Tenant, tenant=tenant, applied=applied)
    if applied or post_migrate:
        emit_post_migrate_signal(0, False, tenant.database.alias)
