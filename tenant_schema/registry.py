"""The registry: a slug resolves to its one tenant row, and so to its one database.

Every public entry point that takes a slug (``get_or_create_tenant_db``,
``get_tenant_db``, ``register_tenant``, ``tenant_context``, the middleware,
the commands, the admin) goes through ``get_tenant`` here, in every process:
no code derives a tenant's database from a slug without the registry row.

``ready_tenants`` keeps ready rows for ``ROUTING_CACHE_SECONDS`` so routing
a request costs no registry query; any change to a tenant in this process
forgets it at once. ``check_writable`` reads a tenant's maintenance mode
from it, so the router and the Table API refuse writes to a tenant in
maintenance at no registry query either.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import threading
import time
import uuid
from collections.abc import Iterable
from typing import TYPE_CHECKING

from django.apps import apps
from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed
from django.db import DatabaseError, connections, router
from django.db.models.signals import post_delete, post_save

from . import conf, django_private
from .databases import TenantDatabase
from .exceptions import (
    NoTenantSelected,
    RegistryNotMigrated,
    TenantDatabaseDoesNotExist,
    TenantMoved,
    TenantNotFound,
    TenantSchemaError,
    TenantUnavailable,
)

if TYPE_CHECKING:  # pragma: no cover
    from .models import Tenant
from .names import normalize_slug
from .signals import tenant_archived, tenant_dropped, tenant_moved

__all__ = [
    "ReadyTenants",
    "accepts_tenant",
    "activate",
    "as_tenant_db",
    "check_writable",
    "current_tenant",
    "current_tenant_db",
    "deactivate",
    "get_tenant",
    "tenant_app_labels",
    "get_tenant_db",
    "normalize_slug",
    "ready_tenants",
    "registry_db",
]


def tenant_model():
    """The ``Tenant`` model, imported on first use: this module is importable before Django is set up."""
    from .models import Tenant

    return Tenant


def registry_db() -> str:
    """The alias holding the ``Tenant`` table (``default`` unless a router says otherwise)."""
    return router.db_for_write(tenant_model())


def missing_registry() -> RegistryNotMigrated | None:
    """The error to raise instead of a database error when the registry's table was never created.

    Called after a ``DatabaseError``, so the introspection query costs nothing
    on the way that works. ``None`` when the table exists (or the registry
    cannot even be asked): the original error stands.
    """
    using, table = registry_db(), tenant_model()._meta.db_table
    connection = connections[using]
    try:
        with connection.cursor() as cursor:
            if table in connection.introspection.table_names(cursor):
                return None
    except DatabaseError:
        return None
    return RegistryNotMigrated(
        f"the tenant registry is not set up: table {table!r} does not exist in database {using!r}; "
        "run `manage.py migrate` once before registering tenants"
    )


def needs_registry(func):
    """Raise ``RegistryNotMigrated`` instead of a bare "no such table" when ``func`` meets an unmigrated registry."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except DatabaseError as exc:
            missing = missing_registry()
            if missing is None:
                raise
            raise missing from exc

    return wrapper


#: Slugs per registry query of ``get_tenants`` (below every engine's limit on bound parameters).
SLUGS_PER_QUERY = 500


def _slug(slug: str) -> str:
    """``slug`` normalised; ``TenantNotFound`` saying why when it cannot be one."""
    try:
        return normalize_slug(slug)
    except ValueError as exc:
        raise TenantNotFound(f"no tenant {slug!r}: {exc}") from None


def get_tenant(slug: str) -> Tenant:
    """The registered tenant ``slug`` (normalised), whatever its status; ``TenantNotFound`` otherwise."""
    slug = _slug(slug)
    Tenant = tenant_model()
    try:
        return Tenant.objects.get(slug=slug)
    except Tenant.DoesNotExist:
        raise TenantNotFound(f"no tenant {slug!r} is registered") from None


def get_tenants(slugs: Iterable[str]) -> list[Tenant]:
    """The registered tenants ``slugs`` (normalised, each once, in their order), whatever their status.

    One query per ``SLUGS_PER_QUERY`` slugs; ``TenantNotFound`` naming the
    slugs nobody registered (the first five, and how many more).
    """
    unique = list(dict.fromkeys(_slug(slug) for slug in slugs))
    Tenant = tenant_model()
    found: dict[str, Tenant] = {}
    for start in range(0, len(unique), SLUGS_PER_QUERY):
        found.update((t.slug, t) for t in Tenant.objects.filter(slug__in=unique[start : start + SLUGS_PER_QUERY]))
    missing = [slug for slug in unique if slug not in found]
    if missing:
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        raise TenantNotFound(f"no tenant {', '.join(map(repr, missing[:5]))}{more} is registered")
    return [found[slug] for slug in unique]


def check_server(tenant: Tenant, server_key: str | None) -> None:
    """A ``server_key`` that is given must be the one the registry records."""
    if server_key is not None and server_key != tenant.server:
        raise TenantSchemaError(
            f"tenant {tenant.slug!r} is registered on server {tenant.server!r}, not {server_key!r} "
            "(a tenant has exactly one database; moving it is a separate operation)"
        )


def get_tenant_db(slug: str, server: str | None = None):
    """The ready tenant's ``TenantDatabase``, from the registry; nothing is created.

    ``TenantNotFound`` for a slug nobody registered; ``TenantDatabaseDoesNotExist``
    for a tenant whose registration has not finished (``register_tenant``
    completes it) or that is archived; an error naming both servers when
    ``server`` is not the registered one.
    """
    tenant = get_tenant(slug)
    check_server(tenant, server)
    if tenant.status != tenant_model().Status.READY:
        raise TenantDatabaseDoesNotExist(
            f"tenant {tenant.slug!r} is {tenant.status}, not ready: {not_ready_hint(tenant)}"
        )
    return tenant.database


def not_ready_hint(tenant: Tenant) -> str:
    """What serves a tenant that is not ready: ``tenant_restore`` an archived one, ``tenant_register`` the rest."""
    if tenant.status == tenant_model().Status.ARCHIVED:
        return f"its data is kept; `manage.py tenant_restore {tenant.slug}` serves it again"
    return f"`manage.py tenant_register {tenant.slug}` completes it"


class ReadyTenants:
    """Ready tenants by slug, trusted for ``TENANT_SCHEMA["ROUTING_CACHE_SECONDS"]``.

    Without it every request pays a registry query (and, with
    ``CONN_MAX_AGE=0``, a connection to ``default``): about half the cost of
    a small request. Only ready tenants are kept, so a new tenant is served
    at once; any save or delete of a tenant in this process forgets it at
    once; other processes notice within the TTL. Callers get a copy, so a
    view changing ``request.tenant`` changes no other request's.

    The registry query runs outside the lock. A ``forget`` that lands
    between that query and the insert bumps ``_generation``, and the
    (possibly stale) row is then not cached. One counter for all slugs:
    forgets are rare (a tenant saved or deleted), and the price of a
    spurious bump is one more registry query, never a stale entry.
    """

    MAX_ENTRIES = 10_000

    def __init__(self) -> None:
        self._entries: dict[str, tuple[Tenant, float]] = {}
        self._lock = threading.Lock()
        self._generation = 0

    def get(self, slug: str) -> Tenant | None:
        cached = self.peek(slug)
        if cached is not None:
            return cached
        ttl = float(conf.get("ROUTING_CACHE_SECONDS"))
        now = time.monotonic()
        generation = self._generation
        Tenant = tenant_model()
        tenant = Tenant.objects.filter(slug=slug, status=Tenant.Status.READY).first()
        with self._lock:
            if tenant is None or ttl <= 0:
                self._entries.pop(slug, None)
            elif generation != self._generation:
                pass  # forgotten while we queried: the row may predate the change
            else:
                if len(self._entries) >= self.MAX_ENTRIES:
                    self._entries.clear()
                self._entries[slug] = (tenant, now + ttl)
        return _copy_row(tenant) if tenant is not None else None

    def _cached(self, slug: str) -> Tenant | None:
        """The cached row itself (shared: read it, never hand it out), or ``None`` when absent or expired."""
        hit = self._entries.get(slug)
        return hit[0] if hit is not None and hit[1] > time.monotonic() else None

    def peek(self, slug: str) -> Tenant | None:
        """The cached tenant, without a query (async code skips a thread hop)."""
        cached = self._cached(slug)
        return _copy_row(cached) if cached is not None else None

    def in_maintenance(self, slug: str) -> bool:
        """Whether the ready tenant ``slug`` is in maintenance mode (False for one that is not ready).

        A cache hit costs no query and no copy of the row.
        """
        tenant = self._cached(slug) or self.get(slug)
        return tenant is not None and tenant.maintenance

    def cached_uid(self, slug: str) -> uuid.UUID | None:
        """The ``uid`` of the cached ready tenant ``slug``, without a query or a copy; ``None`` if not cached."""
        cached = self._cached(slug)
        return cached.uid if cached is not None else None

    def forget(self, slug: str | None = None) -> None:
        with self._lock:
            self._generation += 1
            if slug is None:
                self._entries.clear()
            else:
                self._entries.pop(slug, None)


ready_tenants = ReadyTenants()


def _copy_row(tenant: Tenant) -> Tenant:
    """A copy of a cached row for one request, so a view changing it changes no other request's."""
    return django_private.copy_instance(tenant)


def _forget(sender, instance=None, tenant=None, **kwargs) -> None:
    row = instance if instance is not None else tenant
    ready_tenants.forget(getattr(row, "slug", None))


post_save.connect(_forget, sender="tenant_schema.Tenant", dispatch_uid="tenant_schema.routing_cache.save")
post_delete.connect(_forget, sender="tenant_schema.Tenant", dispatch_uid="tenant_schema.routing_cache.delete")
tenant_archived.connect(_forget, dispatch_uid="tenant_schema.routing_cache.archived")
tenant_dropped.connect(_forget, dispatch_uid="tenant_schema.routing_cache.dropped")
tenant_moved.connect(_forget, dispatch_uid="tenant_schema.routing_cache.moved")


def _forget_all_on_settings(*, setting: str, **kwargs) -> None:
    """Overridden settings (tests): rows are looked up again under the new ``ROUTING_CACHE_SECONDS`` and servers."""
    if setting == "TENANT_SCHEMA":
        ready_tenants.forget()


setting_changed.connect(_forget_all_on_settings, dispatch_uid="tenant_schema.routing_cache.settings")


def as_tenant_db(target):
    """A ``TenantDatabase`` from a ``TenantDatabase``, a ``Tenant`` or a slug (through the registry)."""
    if isinstance(target, TenantDatabase):
        return target
    Tenant = tenant_model()
    if isinstance(target, Tenant):
        return get_tenant_db(target.slug) if target.status != Tenant.Status.READY else target.database
    if isinstance(target, str):
        return get_tenant_db(target)
    raise TypeError(f"expected a TenantDatabase, a Tenant or a tenant slug, not {type(target).__name__}")


def accepts_tenant(func):
    """Let ``func``'s first argument be a ``TenantDatabase``, a ``Tenant`` or a slug."""

    @functools.wraps(func)
    def wrapper(tenant, *args, **kwargs):
        return func(as_tenant_db(tenant), *args, **kwargs)

    return wrapper


# -- the current tenant ----------------------------------------------------------
# One ContextVar, so it is right in threads and async code. ``tenant_context``
# (tenant_schema.context) is the API people use; ``activate``/``deactivate``
# are the primitive under it, for code below the run-time layer (the fleet
# migration selects each tenant while its RunPython code runs).

_current: contextvars.ContextVar[tuple[Tenant, TenantDatabase, bool] | None] = contextvars.ContextVar(
    "tenant_schema_current_tenant", default=None
)


def activate(tenant: Tenant, *, maintenance_writes: bool = False) -> contextvars.Token:
    """Make ``tenant`` the current tenant (no status check); ``deactivate(token)`` undoes it.

    ``maintenance_writes=True`` lets the code that runs while it is current
    write to the tenant even in maintenance mode: the work maintenance mode
    is switched on for (migrations, repairs, copying it elsewhere).
    """
    return _current.set((tenant, tenant.database, maintenance_writes))


def deactivate(token: contextvars.Token) -> None:
    """Restore the tenant that was current before ``activate`` returned ``token``."""
    _current.reset(token)


def current_tenant() -> Tenant | None:
    """The ``Tenant`` selected in this thread / async context, or ``None``."""
    active = _current.get()
    return active[0] if active is not None else None


def current_tenant_db() -> TenantDatabase:
    """The current tenant's ``TenantDatabase``; ``NoTenantSelected`` if there is none."""
    active = _current.get()
    if active is None:
        raise NoTenantSelected(
            "no tenant selected: query tenant models inside `with tenant_context(tenant):` "
            "(TenantMiddleware sets it per request)"
        )
    return active[1]


#: Slugs whose writes the life cycle is making right now (provisioning, migrating): never refused.
_lifecycle_writes: contextvars.ContextVar[frozenset[str]] = contextvars.ContextVar(
    "tenant_schema_lifecycle_writes", default=frozenset()
)


@contextlib.contextmanager
def lifecycle_writes(slug: str):
    """Let the block write to (and change the tables of) tenant ``slug`` even in maintenance mode.

    For tenant-schema's own life-cycle work (creating ``TENANT_TABLES``
    while provisioning or migrating), which is what maintenance mode waits
    for; it also spares ``check_writable`` a registry query for a tenant that
    is not ready yet.
    """
    token = _lifecycle_writes.set(_lifecycle_writes.get() | {slug})
    try:
        yield
    finally:
        _lifecycle_writes.reset(token)


def check_writable(slug: str, tenant_db: TenantDatabase | None = None) -> None:
    """``TenantUnavailable`` if tenant ``slug`` is in maintenance mode: the router and the Table API ask before a write.

    The flag comes from ``ready_tenants``: this process sees a switch at
    once, other processes within ``ROUTING_CACHE_SECONDS``. Writes are let
    through while the tenant is current with ``maintenance_writes=True``,
    or current as a row that is not ready (a migration or repair of an
    archived tenant: maintenance mode is about what is served).

    With ``tenant_db`` (the binding the write would use), ``TenantMoved``
    when the registry's ready row places the tenant elsewhere: a binding
    made before ``move_tenant`` moved it, which would write to the copy the
    move kept; also where maintenance mode lets the write through.
    """
    if slug in _lifecycle_writes.get():
        return
    active = _current.get()
    maintenance_ok = (
        active is not None and active[0].slug == slug and (active[2] or active[0].status != tenant_model().Status.READY)
    )
    if maintenance_ok and tenant_db is None:
        return
    row = ready_tenants._cached(slug) or ready_tenants.get(slug)
    if row is None:
        return
    if row.maintenance and not maintenance_ok:
        raise TenantUnavailable(slug)
    if tenant_db is not None and (row.server, row.database_name) != (tenant_db.server.key, tenant_db.name):
        raise TenantMoved(
            slug,
            f"tenant {slug!r} lives in {row.database_name!r} on server {row.server!r} now, not in "
            f"{tenant_db.name!r} on server {tenant_db.server.key!r} (it was moved): this handle is bound to "
            f"its old database, so the write is refused; get the tenant's database or table again "
            f"(get_tenant_db({slug!r}), register_table(...), tenant_context({slug!r}))",
        )


# -- tenant apps --------------------------------------------------------------------

_labels: frozenset[str] | None = None
_labels_lock = threading.Lock()


def tenant_app_labels() -> frozenset[str]:
    """App labels of ``TENANT_SCHEMA["TENANT_APPS"]`` (which may list names or labels)."""
    global _labels
    labels = _labels
    if labels is None:
        with _labels_lock:
            found = set()
            for entry in conf.get("TENANT_APPS"):
                config = next((c for c in apps.get_app_configs() if entry in (c.name, c.label)), None)
                if config is None:
                    raise ImproperlyConfigured(
                        f'TENANT_SCHEMA["TENANT_APPS"] lists {entry!r}, which is not in INSTALLED_APPS'
                    )
                found.add(config.label)
            labels = _labels = frozenset(found)
    return labels


def _clear_labels(*, setting: str, **kwargs) -> None:
    global _labels
    if setting in ("TENANT_SCHEMA", "INSTALLED_APPS"):
        _labels = None


setting_changed.connect(_clear_labels)
