"""Archive, restore, maintenance mode and purge: a registered tenant taken out of service, back, or away.

Archiving keeps the data and stops serving the tenant; restoring brings an
archived tenant back to ``ready`` with its schema at the current plan, the
status written only once everything else succeeded; maintenance mode keeps
a ready tenant served for reads only. A purge archives the row (and forgets
it in this process's routing cache) before anything is dropped, so one that
fails half-way leaves an unserved row, never a served row pointing at a
dropped database, and never a database with no row. A database is dropped
only when its ownership marker is the tenant's.
"""

from __future__ import annotations

from django.utils import timezone

from .. import credentials, databases, ownership
from ..exceptions import TenantDatabaseDoesNotExist, TenantNotFound, TenantSchemaError
from ..migration_plan import migration_plan
from ..models import Tenant
from ..registry import get_tenant, ready_tenants
from ..signals import tenant_archived, tenant_dropped, tenant_maintenance_changed, tenant_restored
from .build import applied_migrations, create_tenant_tables
from .migrate import migrate_tenant, record_migration_state

__all__ = ["archive_tenant", "drop_owned_database", "purge_tenant", "restore_tenant", "set_maintenance"]


def _row(tenant_or_slug: Tenant | str) -> Tenant:
    """The registry's current row: by slug, or re-read by key for a ``Tenant`` (a pool row too)."""
    if isinstance(tenant_or_slug, Tenant):
        try:
            return Tenant.objects.get(pk=tenant_or_slug.pk)
        except Tenant.DoesNotExist:
            raise TenantNotFound(f"no tenant {tenant_or_slug.slug!r} is registered") from None
    return get_tenant(tenant_or_slug)


def archive_tenant(tenant_or_slug: Tenant | str) -> Tenant:
    """Mark the tenant archived (no longer served; its data stays) and close its connections."""
    tenant = _row(tenant_or_slug)
    tenant.status = Tenant.Status.ARCHIVED
    tenant.save(update_fields=["status", "updated_at"])
    databases.close_alias_connections(tenant.database.alias)
    tenant_archived.send(sender=Tenant, tenant=tenant)
    return tenant


def restore_tenant(tenant_or_slug: Tenant | str) -> Tenant:
    """Bring an archived tenant back to ``ready``, its schema at the current migration plan.

    Only an archived tenant: any other status is an error saying what to do
    instead. Its database (or schema) must still be on its server
    (``TenantDatabaseDoesNotExist`` otherwise) and hold the tenant's
    ownership marker (``NotOurDatabase`` otherwise); either way nothing is
    changed and the row stays archived. The migrations it lacks are applied
    and ``TENANT_TABLES`` added since are created, and only then does the
    status become ``ready``: a restore that fails half-way leaves an archived
    row, and calling it again resumes. Maintenance mode stays as it was.
    Sends ``tenant_restored``.
    """
    tenant = _row(tenant_or_slug)
    if tenant.status != Tenant.Status.ARCHIVED:
        raise TenantSchemaError(_not_restorable(tenant))
    if tenant.provisioned_at is None:
        raise TenantSchemaError(
            f"tenant {tenant.slug!r} was archived before its registration finished, so it was never ready: "
            f"`manage.py tenant_drop {tenant.slug} --purge`, then register it again"
        )
    tenant_db = tenant.database
    with tenant_db.released():
        if not tenant_db.exists():
            raise TenantDatabaseDoesNotExist(
                f"tenant {tenant.slug!r} cannot be restored: its {tenant_db.server.isolation} {tenant_db.name!r} "
                f"is not on server {tenant_db.server.key!r} ({tenant_db.dialect.name}); the row stays "
                f"archived (`manage.py tenant_drop {tenant.slug} --purge` removes it)"
            )
        ownership.check_owner(tenant_db, tenant)  # never serve someone else's database
        plan = migration_plan()
        if plan.pending(applied_migrations(tenant_db) or set()):
            migrate_tenant(tenant)  # records the plan's fingerprint
        elif tenant.migrated_to != plan.fingerprint:
            create_tenant_tables(tenant_db)  # TENANT_TABLES added since it was archived
            record_migration_state(tenant, plan.fingerprint)
    restored = Tenant.objects.filter(pk=tenant.pk, status=Tenant.Status.ARCHIVED).update(
        status=Tenant.Status.READY, last_error="", updated_at=timezone.now()
    )
    if not restored:
        raise TenantSchemaError(f"tenant {tenant.slug!r} was changed or purged while it was being restored")
    ready_tenants.forget(tenant.slug)
    tenant.refresh_from_db()
    tenant_restored.send(sender=Tenant, tenant=tenant)
    return tenant


def _not_restorable(tenant: Tenant) -> str:
    """Why ``tenant`` (not archived) cannot be restored, and what to do instead."""
    if tenant.status == Tenant.Status.READY:
        return f"tenant {tenant.slug!r} is ready, not archived: there is nothing to restore"
    if tenant.status == Tenant.Status.POOLED:
        return f"{tenant.slug!r} is a pooled database, not an archived tenant: there is nothing to restore"
    if tenant.copy_of is not None:
        return (
            f"{tenant.slug!r} is {tenant.status}: a database tenant_move keeps or fills for another tenant, "
            "not an archived tenant; it is never restored (`manage.py tenant_move <slug> --drop-source` drops "
            "a kept copy)"
        )
    return (
        f"tenant {tenant.slug!r} is {tenant.status}, not archived: only archived tenants are restored; "
        f"`manage.py tenant_register {tenant.slug}` finishes its registration"
    )


def set_maintenance(tenant_or_slug: Tenant | str, on: bool) -> Tenant:
    """Switch the tenant's maintenance mode on (``True``) or off (``False``); the row.

    While it is on the tenant stays ``ready`` and is served for reads, but
    writes through the ORM or the Table API raise ``TenantUnavailable`` and
    ``TenantMiddleware`` answers unsafe requests with a 503. This process
    sees the switch at once (saving the row forgets it in the routing
    cache), other processes within ``ROUTING_CACHE_SECONDS``: wait that long
    (and for requests already running to end) before relying on no process
    writing. A tenant that is not ready keeps the flag for when it is
    restored. Sends ``tenant_maintenance_changed`` (``maintenance=on``)
    when the mode changed; a tenant already in it is returned as it is.
    """
    if not isinstance(on, bool):
        raise TypeError(f"set_maintenance() takes on=True or on=False, not {on!r}")
    tenant = _row(tenant_or_slug)
    if tenant.maintenance == on:
        return tenant
    tenant.maintenance = on
    tenant.save(update_fields=["maintenance", "updated_at"])
    tenant_maintenance_changed.send(sender=Tenant, tenant=tenant, maintenance=on)
    return tenant


def purge_tenant(tenant_or_slug: Tenant | str) -> bool:
    """Stop serving the tenant, drop its database (or schema), then delete its row.

    The row is archived (and forgotten by this process's routing cache)
    before anything is dropped, so a purge that fails half-way leaves an
    unserved row, never a served row pointing at a dropped database, and
    never a database with no row; calling it again finishes the purge. A
    database whose ownership marker is not this tenant's is never dropped:
    ``NotOurDatabase``, and the row stays archived. Call it outside a
    registry transaction: the archived status must be committed before the
    drop. True when a database was dropped.
    """
    tenant = _row(tenant_or_slug)
    if tenant.status != Tenant.Status.ARCHIVED:
        tenant.status = Tenant.Status.ARCHIVED
        tenant.save(update_fields=["status", "updated_at"])
    ready_tenants.forget(tenant.slug)
    dropped = drop_owned_database(tenant)
    tenant.delete()
    tenant_dropped.send(sender=Tenant, tenant=tenant)
    return dropped


def drop_owned_database(tenant: Tenant) -> bool:
    """Drop the tenant's database (if it is there and its marker is the tenant's) and its role.

    ``NotOurDatabase``, with nothing dropped, when the marker is not the
    tenant's. The registry row is not touched. True when a database was dropped.
    """
    tenant_db = tenant.database
    dropped = False
    if tenant_db.exists():
        ownership.check_owner(tenant_db, tenant)
        tenant_db.close()
        dropped = databases.drop_bound_database(tenant_db)
    else:
        databases.forget_binding(tenant_db)
    credentials.drop_tenant_role(tenant_db.server, tenant_db.name)  # also when a retried purge finds no database
    return dropped
