"""The seed API: a tenant's database by slug; and claiming a database that has no marker.

``get_or_create_tenant_db`` is ``register_tenant`` returning the tenant's
database, ``drop_tenant_db`` is ``purge_tenant`` by slug: one registry row,
one database, the same from every process. ``claim_tenant_database`` is for
an operator who has checked that a database with no ownership marker (made
by a version without markers, or left by a registration that died between
creating the database and marking it) really is the tenant's.
"""

from __future__ import annotations

from asgiref.sync import sync_to_async

from .. import ownership
from ..databases import TenantDatabase
from ..exceptions import TenantNotFound, TenantSchemaError
from ..models import Tenant
from ..names import IMPORT_SLUG_RE, MOVE_SLUG_RE, POOL_SLUG_RE
from ..registry import check_server, get_tenant, registry_db
from .archive import purge_tenant
from .register import register_tenant

__all__ = ["aget_or_create_tenant_db", "claim_tenant_database", "drop_tenant_db", "get_or_create_tenant_db"]


def get_or_create_tenant_db(slug: str, server: str | None = None) -> TenantDatabase:
    """The tenant's database, registering the tenant first when it is not registered.

    The same tenant as ``register_tenant(slug, server=server)``: a registry
    row, its own database with the tenant apps' tables, the same database
    from every process. A registered tenant's database is returned as it is
    (naming another server than the registered one is an error); an
    unfinished registration is completed; an archived tenant is an error.
    """
    return register_tenant(slug, server=server).database


async def aget_or_create_tenant_db(slug: str, server: str | None = None) -> TenantDatabase:
    """Async twin of ``get_or_create_tenant_db``."""
    return await sync_to_async(get_or_create_tenant_db)(slug, server)


def drop_tenant_db(slug: str, server: str | None = None) -> bool:
    """Purge the tenant: drop its database and its registry row (``purge_tenant``).

    False when no such tenant is registered. ``server``, when given, must be
    the registered one. Dropping data is always explicit: nothing in
    tenant-schema calls this except ``tenant_drop --purge`` and your code.
    """
    try:
        tenant = get_tenant(slug)
    except TenantNotFound:
        return False
    check_server(tenant, server)
    return purge_tenant(tenant)


#: The reserved rows whose database is being built, as a registration's is, and can be left unmarked.
_RESERVED_ROWS = (POOL_SLUG_RE, MOVE_SLUG_RE, IMPORT_SLUG_RE)
_BUILDING = (Tenant.Status.PROVISIONING, Tenant.Status.FAILED, Tenant.Status.MOVING)


def _claimable(slug: str) -> Tenant:
    """The registry row ``claim_tenant_database`` marks the database of: a tenant's, or the row of a pooled
    database, a move's target or an import still being built (``pool-``, ``move-``, ``import-<hex>``)."""
    if isinstance(slug, str) and any(pattern.fullmatch(slug) for pattern in _RESERVED_ROWS):
        row = Tenant.objects.using(registry_db()).filter(slug=slug, status__in=_BUILDING).first()
        if row is None:
            raise TenantNotFound(f"no database being built under {slug!r} (a warm pool's, a move's or an import's)")
        return row
    return get_tenant(slug)


def claim_tenant_database(slug: str) -> Tenant:
    """Write this tenant's ownership marker into a database that has none.

    For an operator who has checked that the database under the tenant's
    name really is the tenant's: one made by a tenant-schema version without
    markers, or left by a registration that died between creating the
    database and marking it (or a warm-pool database, a move's target or an
    import's, by the reserved slug of its registry row). A database marked for another tenant is never
    claimed; a missing one is an error. Nothing else is changed: run
    ``register_tenant`` afterwards to finish an unfinished registration.
    """
    tenant = _claimable(slug)
    tenant_db = tenant.database
    if not tenant_db.exists():
        raise TenantSchemaError(
            f"tenant {tenant.slug!r} has no database {tenant_db.name!r} on server {tenant_db.server.key!r} to claim"
        )
    marker = ownership.read_marker(tenant_db)
    if marker is not None:
        ownership.check_owner(tenant_db, tenant)  # NotOurDatabase when it is someone else's
        return tenant  # already this tenant's
    ownership.write_marker(tenant_db, tenant, origin="claimed")
    tenant_db.close()
    return tenant
