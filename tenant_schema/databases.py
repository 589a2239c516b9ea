"""Tenant databases: a ``TenantDatabase`` per tenant, bound to its connection alias.

A binding is made from the registry's row (``Tenant.database``); this module
never derives a tenant's location from a slug on its own. The aliases
themselves, and the caps on open connections and aliases, live in ``aliases``.

Bindings are kept for the ``MAX_ALIASES`` least recently bound tenants; one
evicted is still returned while anything holds it, and one with tables
registered in this process is kept (those tables are process state).
"""

from __future__ import annotations

import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from django.core.exceptions import ImproperlyConfigured
from django.db import connections, transaction

from . import conf, credentials
from .aliases import (  # noqa: F401 - re-exported: the connection API of this layer
    ADMIN_ALIAS_PREFIX,
    ALIAS_PREFIX,
    INTERNAL_ALIAS_PREFIX,
    ConnectionLimitReached,
    _initialized,
    admin_alias,
    close_alias_connections,
    close_tenant_connections,
    discard_connection,
    max_aliases,
    open_tenant_connections,
    pin_alias,
    register_alias,
    released,
    tenant_alias,
    touch,
    unregister_alias,
)
from .names import validate_identifier, validate_slug
from .plugins import get_plugins
from .servers import Server, get_server

if TYPE_CHECKING:  # pragma: no cover
    from .schema.tables import Table

#: Opens a table by name (``TenantDatabase.table``); the schema layer
#: (``tenant_schema.schema.tables``) installs it when it loads.
_table_opener: Callable[[TenantDatabase, str], Table] | None = None


def set_table_opener(opener: Callable[[TenantDatabase, str], Table]) -> None:
    global _table_opener
    _table_opener = opener


class TenantDatabase:
    """A tenant's database (or schema) on a server, bound to its own alias."""

    def __init__(self, slug: str, server: Server, name: str) -> None:
        self.slug = slug
        self.server = server
        self.name = name
        self.alias = tenant_alias(slug)
        self._tables: dict[str, Table] = {}
        self._tables_lock = threading.RLock()

    def __repr__(self) -> str:
        return f"<TenantDatabase {self.slug!r} on {self.server.key!r} ({self.dialect.name})>"

    @property
    def dialect(self):
        return self.server.dialect

    @property
    def connection(self):
        """This tenant's Django connection (per thread / async context)."""
        self.ensure_alias()
        touch(self.alias)
        return connections[self.alias]

    @property
    def can_rollback_ddl(self) -> bool:
        """Whether DDL here is transactional (the ``tenant_schema_can_rollback_ddl`` hook)."""
        return bool(get_plugins().hook.tenant_schema_can_rollback_ddl(dialect=self.dialect, connection=self.connection))

    def connection_settings(self, *, as_server_user: bool = False) -> dict[str, Any]:
        """Django settings of this tenant's alias: the dialect's, logged in as the tenant's role
        (``?tenant_roles=true``) unless ``as_server_user``."""
        settings = get_plugins().hook.tenant_schema_tenant_settings(
            dialect=self.dialect, server=self.server, database_name=self.name
        )
        if self.server.tenant_roles and not as_server_user:
            settings["USER"], settings["PASSWORD"] = credentials.tenant_login(self.server, self.name)
        return settings

    def ensure_alias(self) -> None:
        pin_alias(self.alias)  # not evicted between this check and its use
        if self.alias not in connections.settings:
            register_alias(self.alias, self.connection_settings())

    @property
    def admin_alias(self) -> str:
        """The alias reaching this database with the server URL's own credentials."""
        return admin_alias(self.slug)

    @property
    def admin_connection(self):
        """This database, reached as the server URL's user rather than the tenant's role.

        The same as ``connection`` unless the server gives each tenant its
        own credentials (``?tenant_roles=true``); provisioning reads and
        writes the ownership marker through it, before the tenant's role
        has any privilege on the database.
        """
        if not self.server.tenant_roles:
            return self.connection
        pin_alias(self.admin_alias)
        if self.admin_alias not in connections.settings:
            register_alias(self.admin_alias, self.connection_settings(as_server_user=True))
        return connections[self.admin_alias]

    def atomic(self, savepoint: bool = True, durable: bool = False):
        """``transaction.atomic`` on this tenant's alias."""
        self.ensure_alias()
        return transaction.atomic(using=self.alias, savepoint=savepoint, durable=durable)

    @property
    def tables(self) -> dict[str, Table]:
        """Tables registered in this process, by name."""
        with self._tables_lock:
            return dict(self._tables)

    def forget_tables(self) -> None:
        """Forget the tables registered in this process, as a restart would.

        The next ``table(name)`` introspects the table again, and the next
        ``register_table`` compares its class with what the database holds:
        use it after another process changed this tenant's tables.
        """
        with self._tables_lock:
            self._tables.clear()

    def table(self, name: str) -> Table:
        """A ``Table`` for an existing table: the registered one, else introspected."""
        with self._tables_lock:
            if name in self._tables:
                return self._tables[name]
        if _table_opener is None:
            raise ImproperlyConfigured(
                "tenant_schema.schema.tables is not loaded: add 'tenant_schema' to INSTALLED_APPS"
            )
        return _table_opener(self, name)

    def exists(self) -> bool:
        """Whether the database (or schema) is on its server (the dialect's ``database_exists``)."""
        server = self.server
        return bool(
            get_plugins().hook.tenant_schema_database_exists(dialect=server.dialect, server=server, name=self.name)
        )

    def close_everywhere(self) -> None:
        """Close this thread's connections to the tenant and ask other threads to close theirs."""
        for alias in (self.alias, self.admin_alias):
            close_alias_connections(alias)

    def released(self):
        """A context manager for a visit to this tenant: the connections it opens inside are closed,
        and the aliases it registers forgotten, afterwards (``aliases.released``).

        For code that visits many tenants once (fleet migration, listings),
        so visiting 10,000 tenants holds one connection and no 10,000 aliases.
        """
        return released(self.alias, self.admin_alias)

    def close(self) -> None:
        """Close this thread's connections to the tenant."""
        for alias in (self.alias, self.admin_alias):
            if alias in connections.settings and _initialized(alias):
                connections[alias].close()


#: Bindings, least recently bound first (at most ``MAX_ALIASES``).
_tenants: OrderedDict[str, TenantDatabase] = OrderedDict()
#: Bindings evicted from ``_tenants`` that have tables registered in this process.
_tenants_with_tables: dict[str, TenantDatabase] = {}
#: Bindings evicted from ``_tenants`` that something still holds.
_tenants_evicted: weakref.WeakValueDictionary[str, TenantDatabase] = weakref.WeakValueDictionary()
_tenants_lock = threading.Lock()
#: Settings that say where an alias connects; an alias registered with others is a stale location.
LOCATION_SETTINGS = ("ENGINE", "NAME", "HOST", "PORT", "USER", "OPTIONS")


def database_name(slug: str, server: Server) -> str:
    """The database (or schema) name of a new tenant ``slug`` on ``server``.

    ``DATABASE_PREFIX`` plus the slug with hyphens turned into underscores.
    A name the dialect reserves (``postgres``, ``mysql``, ``sys``,
    ``template0``, ...) or the server's own database is refused before any
    SQL runs, and so is an empty prefix (a system check reports it too).
    """
    prefix = conf.get("DATABASE_PREFIX")
    if not isinstance(prefix, str) or not prefix:
        raise ImproperlyConfigured(
            'TENANT_SCHEMA["DATABASE_PREFIX"] must be a non-empty string such as "tenant_": '
            "without one a tenant's database name could be any database on the server"
        )
    name = _valid_name(prefix + slug.replace("-", "_"), server)
    if server.dialect.reserves_database_name(server, name):
        raise ValueError(
            f"tenant {slug!r} would get the database name {name!r}, which {server.dialect.name} "
            f"server {server.key!r} reserves; choose another slug or DATABASE_PREFIX"
        )
    return name


def _valid_name(name: object, server: Server) -> str:
    """``name`` if it is a safe database (or schema) name on ``server``, else ``ValueError``.

    Names become file paths (SQLite) and connection options (PostgreSQL's
    search path), so a given name is checked like a derived one.
    """
    return validate_identifier(name, "tenant database name", server.dialect.max_identifier_length)


def _unbind(bound: TenantDatabase) -> None:
    """Close and forget the alias of a binding that is no longer the tenant's location.

    Other threads close their connections at their next tenant query or
    request end, and then connect to the new location (see ``touch``).
    """
    bound.close_everywhere()
    for alias in (bound.alias, bound.admin_alias):
        unregister_alias(alias)


def _registered_elsewhere(tenant_db: TenantDatabase) -> bool:
    """Whether the tenant's aliases are registered with another location than ``tenant_db``'s.

    A binding evicted from the cache may leave its aliases registered; a
    new binding checks them before trusting them.
    """
    for alias, as_server_user in ((tenant_db.alias, False), (tenant_db.admin_alias, True)):
        registered = connections.settings.get(alias)
        if registered is None:
            continue
        if as_server_user and not tenant_db.server.tenant_roles:
            return True
        try:
            fresh = tenant_db.connection_settings(as_server_user=as_server_user)
        except Exception:  # noqa: BLE001 - unknown: forgetting the aliases is always safe
            return True
        if any(registered.get(key) != fresh.get(key) for key in LOCATION_SETTINGS):
            return True
    return False


def _cached(slug: str) -> TenantDatabase | None:
    """The binding of ``slug`` if this process has one (under ``_tenants_lock``), back at the LRU's end."""
    bound = _tenants.get(slug)
    if bound is None:
        bound = _tenants_with_tables.pop(slug, None) or _tenants_evicted.pop(slug, None)
        if bound is None:
            return None
        _tenants[slug] = bound
    _tenants.move_to_end(slug)
    return bound


def _evict_bindings() -> None:
    """Past ``MAX_ALIASES`` bindings, drop the least recently bound (under ``_tenants_lock``)."""
    excess = len(_tenants) - max_aliases()
    while excess > 0 and _tenants:
        slug, bound = _tenants.popitem(last=False)
        if bound._tables:
            _tenants_with_tables[slug] = bound
        else:
            _tenants_evicted[slug] = bound
        excess -= 1


def bind_tenant_db(slug: str, server_key: str, name: str) -> TenantDatabase:
    """The ``TenantDatabase`` of a location read from the registry; no SQL runs.

    Only the registry calls this (``Tenant.database``): the registry is the
    truth, so a tenant bound to another location in this process (it moved)
    is rebound here.
    """
    bound = _tenants.get(slug)  # a bound slug was validated when it was bound
    if bound is None:
        validate_slug(slug)
    elif bound.server.key == server_key and bound.name == name:
        try:
            _tenants.move_to_end(slug)
        except KeyError:  # evicted meanwhile by another thread: still a valid binding
            pass
        return bound
    srv = get_server(server_key)
    _valid_name(name, srv)
    with _tenants_lock:
        bound = _cached(slug)
        if bound is not None:
            if bound.server.key == srv.key and bound.name == name:
                return bound
            _unbind(bound)  # the registry says it moved (purged and registered again elsewhere)
        tenant_db = TenantDatabase(slug, srv, name)
        if bound is None and _registered_elsewhere(tenant_db):
            _unbind(tenant_db)  # an evicted binding's aliases, for the old location
        _tenants[slug] = tenant_db
        _evict_bindings()
        return tenant_db


def forget_binding(tenant_db: TenantDatabase) -> None:
    """Close and forget the tenant's aliases in this process (its database is gone or moved)."""
    with _tenants_lock:
        for cache in (_tenants, _tenants_with_tables, _tenants_evicted):
            if cache.get(tenant_db.slug) is tenant_db:
                del cache[tenant_db.slug]
    _unbind(tenant_db)


def drop_bound_database(tenant_db: TenantDatabase) -> bool:
    """Forget the tenant's alias and drop its database (or schema).

    The life cycle's purge calls this after checking the ownership marker;
    it is not public API. True when there was a database to drop.
    """
    forget_binding(tenant_db)
    server = tenant_db.server
    return get_plugins().hook.tenant_schema_drop_database(dialect=server.dialect, server=server, name=tenant_db.name)


def bound_tenants() -> list[TenantDatabase]:
    with _tenants_lock:
        return [*_tenants.values(), *_tenants_with_tables.values(), *_tenants_evicted.values()]
