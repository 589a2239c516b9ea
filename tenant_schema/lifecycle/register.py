"""``register_tenant``: create a tenant (or finish creating it) and return it, ready.

The slug is validated and the migration plan checked before any row or
database exists. On a server with a warm pool a new tenant takes a pooled
database (``pool.claim_pooled``: one registry statement, no DDL); otherwise,
or when the pool is empty, the registry row is created with status
``provisioning`` (committed at once, so a crash leaves a row that is
visibly not ready) and ``provision._provision_row`` builds its database
under a lock on the row and writes ``ready`` last. Re-running it resumes
from whatever a crash left; two processes registering the same slug
serialize on the lock and the second finds the tenant ready.
``tenant_provisioned`` is sent when this call made the tenant ready.
"""

from __future__ import annotations

from collections.abc import Mapping

from asgiref.sync import sync_to_async

from .. import placement, registry
from ..databases import database_name
from ..exceptions import TenantSchemaError
from ..migration_plan import migration_plan
from ..models import Tenant
from ..registry import check_server, normalize_slug
from ..signals import tenant_provisioned
from .pool import claim_pooled
from .provision import _provision_row

__all__ = ["aregister_tenant", "register_tenant"]


@registry.needs_registry
def register_tenant(
    slug: str, *, server: str | None = None, name: str = "", labels: Mapping[str, str] | str | None = None
) -> Tenant:
    """Create the tenant ``slug`` (or finish creating it) and return it, ready.

    Idempotent: a ready tenant is returned as is. Without ``server`` a new
    tenant goes where the placement policy puts it, among the servers
    carrying every one of ``labels`` (``tenant_schema.placement``); a
    registered tenant stays where it is (its server must carry ``labels``).
    When the server keeps a warm pool (``?pool=N``) a new tenant takes one
    of its databases, in one registry transaction and with no DDL; otherwise
    (or when the pool is empty) its database is created here. On failure the
    row is left ``failed`` with ``last_error`` set and the error is
    re-raised; calling again resumes. Sends ``tenant_provisioned`` when this
    call made it ready.
    """
    slug = normalize_slug(slug)
    migration_plan().check_complete()  # before any row or database exists
    tenant = None
    if server is None and (labels or placement.get_policy() is not None):
        tenant = Tenant.objects.filter(slug=slug).first()  # a registered tenant stays where it is
        srv = placement.choose_server(tenant.server if tenant is not None else None, labels)
    else:
        srv = placement.choose_server(server, labels)
        tenant = Tenant.objects.filter(slug=slug).first() if srv.pool else None
    if tenant is None and srv.pool:
        claimed = claim_pooled(slug, srv, name=name)
        if claimed is not None:
            tenant_provisioned.send(sender=Tenant, tenant=claimed)
            return claimed
    if tenant is None:
        tenant, _ = Tenant.objects.get_or_create(
            slug=slug, defaults={"name": name, "server": srv.key, "database_name": database_name(slug, srv)}
        )
    if tenant.status == Tenant.Status.ARCHIVED:
        raise TenantSchemaError(
            f"tenant {slug!r} is archived (its data is kept): `manage.py tenant_restore {slug}` serves it again, "
            f"`manage.py tenant_drop {slug} --purge` deletes it so the slug can be registered anew"
        )
    check_server(tenant, None if server is None else srv.key)
    if tenant.status == Tenant.Status.READY:
        return tenant
    ready = _provision_row(tenant, Tenant.Status.READY, name=name)
    if ready.status == Tenant.Status.READY:
        tenant_provisioned.send(sender=Tenant, tenant=ready)
    return ready


async def aregister_tenant(
    slug: str, *, server: str | None = None, name: str = "", labels: Mapping[str, str] | str | None = None
) -> Tenant:
    """Async twin of ``register_tenant`` (runs it in Django's sync thread)."""
    return await sync_to_async(register_tenant)(slug, server=server, name=name, labels=labels)
