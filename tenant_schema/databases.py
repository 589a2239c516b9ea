"""Tenant databases and their Django connection aliases.

Each tenant gets its own alias, added to ``connections.settings`` lazily on
first use (10,000 tenants cost nothing at start-up), under a lock and
idempotently, with every setting Django would have defaulted filled in by
Django's own ``configure_settings`` (Django applies defaults only once, so a
half-filled alias added later fails on ``TIME_ZONE`` or ``OPTIONS``).

Open tenant connections are capped per process
(``TENANT_SCHEMA["MAX_OPEN_CONNECTIONS"]``): past the cap the least recently
used idle ones are closed. Django connections belong to the thread (or async
context) that opened them, so a connection owned by another thread is closed
by that thread at its next tenant query or at the end of its request.
"""

from __future__ import annotations

import copy
import threading
import weakref
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

from django.core.exceptions import ImproperlyConfigured
from django.core.signals import request_finished
from django.db import DEFAULT_DB_ALIAS, connections, transaction
from django.db.backends.signals import connection_created

from . import conf
from .names import validate_identifier, validate_tenant_id
from .plugins import get_plugins
from .servers import Server, get_server

if TYPE_CHECKING:  # pragma: no cover
    from .tables import Table

ALIAS_PREFIX = "tenant:"
#: Server-level aliases (``CREATE DATABASE``) and tenant databases reached as
#: the server's own user start with this; they hold no tenant-app tables.
INTERNAL_ALIAS_PREFIX = "tenant_schema:"
ADMIN_ALIAS_PREFIX = f"{INTERNAL_ALIAS_PREFIX}admin:"

_alias_lock = threading.Lock()


def register_alias(alias: str, settings_dict: dict[str, Any]) -> None:
    """Add ``alias`` to Django's connections with every setting filled in."""
    if alias in connections.settings:
        return
    with _alias_lock:
        if alias in connections.settings:
            return
        filled = {DEFAULT_DB_ALIAS: {"ENGINE": "django.db.backends.dummy"}, alias: copy.deepcopy(settings_dict)}
        connections.configure_settings(filled)
        _publish({**connections.settings, alias: filled[alias]})


def _publish(new_settings: dict[str, Any]) -> None:
    """Replace ``connections.settings`` with a new dict (copy-on-write).

    Django iterates that dict in every thread (``close_old_connections`` at
    each request end); adding a key in place while another thread iterates
    raises "dictionary changed size during iteration". A fresh dict leaves
    running iterations on the old one. ``settings.DATABASES`` keeps the
    site's own aliases only, so test runners never see tenant aliases.
    """
    connections.settings = new_settings


def _initialized(alias: str) -> bool:
    """Whether this thread (or async context) has a connection object for ``alias``."""
    return hasattr(connections._connections, alias)


def discard_connection(alias: str) -> None:
    """Close this thread's connection for ``alias`` and throw its wrapper away.

    For a connection left unusable (a failure inside a transaction on a
    dropped socket): the next use of the alias builds a fresh wrapper.
    """
    if alias in connections.settings and _initialized(alias):
        wrapper = connections[alias]
        try:
            wrapper.close()
        except Exception:  # noqa: BLE001 - it is being thrown away
            pass
        del connections[alias]


def unregister_alias(alias: str) -> None:
    """Close this thread's connection for ``alias`` and forget the alias.

    Only for a database that is gone (dropped): connections other threads
    hold on it are useless anyway.
    """
    with _alias_lock:
        if alias in connections.settings:
            if _initialized(alias):
                connections[alias].close()
                del connections[alias]
            _publish({key: value for key, value in connections.settings.items() if key != alias})


class TenantDatabase:
    """A tenant's database (or schema) on a server, bound to its own alias."""

    def __init__(self, tenant_id: str, server: Server, name: str) -> None:
        self.tenant_id = tenant_id
        self.server = server
        self.name = name
        self.alias = f"{ALIAS_PREFIX}{tenant_id}"
        self._tables: dict[str, Table] = {}
        self._tables_lock = threading.RLock()

    def __repr__(self) -> str:
        return f"<TenantDatabase {self.tenant_id!r} on {self.server.key!r} ({self.dialect.name})>"

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

    def ensure_alias(self) -> None:
        if self.alias not in connections.settings:
            settings = get_plugins().hook.tenant_schema_tenant_settings(
                dialect=self.dialect, server=self.server, database_name=self.name
            )
            register_alias(self.alias, settings)

    @property
    def admin_alias(self) -> str:
        """The alias reaching this database with the server URL's own credentials."""
        return f"{ADMIN_ALIAS_PREFIX}{self.tenant_id}"

    @property
    def admin_connection(self):
        """This database, reached as the server URL's user rather than the tenant's role.

        The same as ``connection`` unless the server gives each tenant its
        own credentials (``?tenant_roles=true``); provisioning reads and
        writes the ownership marker through it, before the tenant's role
        has any privilege on the database.
        """
        if not getattr(self.server, "tenant_roles", False):
            return self.connection
        if self.admin_alias not in connections.settings:
            settings = get_plugins().hook.tenant_schema_tenant_settings(
                dialect=self.dialect, server=self.server, database_name=self.name
            )
            settings["USER"] = self.server.settings.get("USER", "")
            settings["PASSWORD"] = self.server.settings.get("PASSWORD", "")
            register_alias(self.admin_alias, settings)
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

    def table(self, name: str) -> Table:
        """A ``Table`` for an existing table: the registered one, else introspected."""
        from .tables import Table
        from .mapping import introspect_model

        with self._tables_lock:
            if name in self._tables:
                return self._tables[name]
        validate_identifier(name, "table name", self.dialect.max_identifier_length)
        model = introspect_model(self, name)
        return Table(self, model, name, row_type=dict)

    def close(self) -> None:
        """Close this thread's connections to the tenant."""
        for alias in (self.alias, self.admin_alias):
            if alias in connections.settings:
                connections[alias].close()


_tenants: dict[str, TenantDatabase] = {}
_tenants_lock = threading.Lock()


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


def _bind(tenant_id: str, server: Server, name: str, *, follow: bool = False) -> TenantDatabase:
    """Bind ``tenant_id`` to ``name`` on ``server`` in this process.

    A tenant bound elsewhere is a ``ValueError``, unless ``follow``: then the
    registry says it moved (another process purged it and registered the
    slug again), and the old alias is closed and forgotten first.
    """
    _valid_name(name, server)
    with _tenants_lock:
        bound = _tenants.get(tenant_id)
        if bound is not None:
            if bound.server.key == server.key and bound.name == name:
                return bound
            if not follow:
                raise _bound_elsewhere(bound)
            _unbind(bound)
        tenant_db = _tenants[tenant_id] = TenantDatabase(tenant_id, server, name)
        return tenant_db


def _bound_elsewhere(bound: TenantDatabase) -> ValueError:
    return ValueError(
        f"tenant {bound.tenant_id!r} is already bound to server {bound.server.key!r} "
        f"(database {bound.name!r}) in this process"
    )


def _unbind(bound: TenantDatabase) -> None:
    """Close and forget the alias of a binding that is no longer the tenant's location.

    Other threads close their connections at their next tenant query or
    request end, and then connect to the new location (see ``touch``).
    """
    close_alias_connections(bound.alias)
    unregister_alias(bound.alias)
    _forget_open(bound.alias)


def bind_tenant_db(slug: str, server: str, name: str) -> TenantDatabase:
    """The ``TenantDatabase`` of a location read from the registry; no SQL runs.

    Only the registry calls this (``Tenant.database``): the registry is the
    truth, so a tenant bound to another location in this process (it moved)
    is rebound here.
    """
    validate_tenant_id(slug)
    bound = _tenants.get(slug)
    if bound is not None and bound.server.key == server and bound.name == name:
        return bound
    return _bind(slug, get_server(server), name, follow=True)


def forget_binding(tenant_db: TenantDatabase) -> None:
    """Close and forget the tenant's aliases in this process (its database is gone or moved)."""
    with _tenants_lock:
        if _tenants.get(tenant_db.tenant_id) is tenant_db:
            del _tenants[tenant_db.tenant_id]
    _unbind(tenant_db)
    close_alias_connections(tenant_db.admin_alias)
    unregister_alias(tenant_db.admin_alias)


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
        return list(_tenants.values())


# -- open-connection cap ------------------------------------------------------

class _OpenConnections:
    """LRU of open tenant connections in this process."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        # id(wrapper) -> (weakref to wrapper, owning thread id)
        self.order: OrderedDict[int, tuple[weakref.ref, int]] = OrderedDict()
        # thread id -> ids of wrappers that thread should close
        self.pending: dict[int, set[int]] = {}

    def opened(self, wrapper) -> None:
        with self.lock:
            self.order[id(wrapper)] = (weakref.ref(wrapper), threading.get_ident())
            self.order.move_to_end(id(wrapper))
        self.evict()

    def touch(self, alias: str) -> None:
        me = threading.get_ident()
        if self.pending.get(me):
            self.close_pending()
        current = connections.settings.get(alias)
        wrapper = connections[alias] if current is not None and _initialized(alias) else None
        if wrapper is not None and wrapper.settings_dict is not current and not wrapper.in_atomic_block:
            # The alias was registered again (its tenant moved) after this
            # thread connected: drop the wrapper built from the old settings.
            wrapper.close()
            del connections[alias]
            wrapper = None
        if wrapper is not None and id(wrapper) in self.order:
            with self.lock:
                if id(wrapper) in self.order:
                    self.order.move_to_end(id(wrapper))

    def open_count(self) -> int:
        with self.lock:
            return sum(1 for ref, _ in self.order.values() if _is_open(ref()))

    def evict(self) -> None:
        cap = int(conf.get("MAX_OPEN_CONNECTIONS"))
        me = threading.get_ident()
        to_close = []
        with self.lock:
            for key, (ref, owner) in list(self.order.items()):
                if not _is_open(ref()):
                    del self.order[key]
            excess = len(self.order) - cap
            for key, (ref, owner) in list(self.order.items()):
                if excess <= 0:
                    break
                wrapper = ref()
                if wrapper is None or wrapper.in_atomic_block:
                    continue
                excess -= 1
                del self.order[key]
                if owner == me:
                    to_close.append(wrapper)
                else:
                    self.pending.setdefault(owner, set()).add(key)
        for wrapper in to_close:
            wrapper.close()

    def close_pending(self) -> None:
        me = threading.get_ident()
        with self.lock:
            keys = self.pending.pop(me, set())
        if not keys:
            return
        for alias in list(connections.settings):
            if alias.startswith(ALIAS_PREFIX) and _initialized(alias):
                wrapper = connections[alias]
                if id(wrapper) in keys and not wrapper.in_atomic_block:
                    wrapper.close()

    def forget(self, alias: str) -> None:
        with self.lock:
            for key, (ref, _) in list(self.order.items()):
                wrapper = ref()
                if wrapper is None or wrapper.alias == alias:
                    del self.order[key]


def _is_open(wrapper) -> bool:
    return wrapper is not None and wrapper.connection is not None


_open = _OpenConnections()


def touch(alias: str) -> None:
    """Mark ``alias`` as just used (routing calls this on every query)."""
    _open.touch(alias)


def _forget_open(alias: str) -> None:
    _open.forget(alias)


def open_tenant_connections() -> int:
    """How many tenant connections this process has open."""
    return _open.open_count()


def close_tenant_connections() -> None:
    """Close every tenant connection of this thread; ask other threads to close theirs.

    Call it at shutdown, and before forking worker processes.
    """
    _close_everywhere(lambda alias: alias.startswith(ALIAS_PREFIX))


def close_alias_connections(alias: str) -> None:
    """Close this thread's connection for ``alias``; ask other threads to close theirs."""
    _close_everywhere(lambda candidate: candidate == alias)


def _close_everywhere(wanted) -> None:
    """Close this thread's connections of the aliases ``wanted`` accepts; other
    threads close theirs at their next tenant query or request end."""
    me = threading.get_ident()
    with _open.lock:
        for key, (ref, owner) in list(_open.order.items()):
            wrapper = ref()
            if wrapper is not None and owner != me and wanted(wrapper.alias):
                _open.pending.setdefault(owner, set()).add(key)
    for alias in list(connections.settings):
        if wanted(alias) and _initialized(alias):
            connections[alias].close()


def _on_connection_created(sender, connection, **kwargs) -> None:
    if connection.alias.startswith(ALIAS_PREFIX):
        _open.opened(connection)


def _on_request_finished(sender, **kwargs) -> None:
    _open.close_pending()


connection_created.connect(_on_connection_created)
request_finished.connect(_on_request_finished)
