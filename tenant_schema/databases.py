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

from asgiref.sync import sync_to_async
from django.core.signals import request_finished
from django.db import DEFAULT_DB_ALIAS, connections, transaction
from django.db.backends.signals import connection_created

from . import conf
from .exceptions import TenantDatabaseDoesNotExist
from .names import validate_identifier, validate_tenant_id
from .plugins import get_plugins
from .servers import Server, get_server

if TYPE_CHECKING:  # pragma: no cover
    from .tables import Table

ALIAS_PREFIX = "tenant:"

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
        """Close this thread's connection to the tenant."""
        if self.alias in connections.settings:
            connections[self.alias].close()


_tenants: dict[str, TenantDatabase] = {}
_tenants_lock = threading.Lock()


def database_name(tenant_id: str, server: Server) -> str:
    """The database (or schema) name of ``tenant_id`` on ``server``."""
    return _valid_name(conf.get("DATABASE_PREFIX") + tenant_id.replace("-", "_"), server)


def _valid_name(name: object, server: Server) -> str:
    """``name`` if it is a safe database (or schema) name on ``server``, else ``ValueError``.

    Names become file paths (SQLite) and connection options (PostgreSQL's
    search path), so a given name is checked like a derived one.
    """
    return validate_identifier(name, "tenant database name", server.dialect.max_identifier_length)


def _name(tenant_id: str, server: Server, given: str | None) -> str:
    return database_name(tenant_id, server) if given is None else _valid_name(given, server)


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


def bind_tenant_db(tenant_id: str, server: str, database_name_: str) -> TenantDatabase:
    """The ``TenantDatabase`` for a known location (from the registry); no SQL runs.

    The registry is the truth: a tenant bound to another location in this
    process (it moved) is rebound here.
    """
    validate_tenant_id(tenant_id)
    bound = _tenants.get(tenant_id)
    if bound is not None and bound.server.key == server and bound.name == database_name_:
        return bound
    return _bind(tenant_id, get_server(server), database_name_, follow=True)


def get_or_create_tenant_db(
    tenant_id: str, server: str | None = None, *, database_name_: str | None = None
) -> TenantDatabase:
    """Create the tenant's database if missing and return it, bound to its alias.

    Idempotent, and safe from two processes at once: the dialect's
    ``create_database`` treats a concurrent creator as success.
    """
    validate_tenant_id(tenant_id)
    srv = get_server(server)
    name = _name(tenant_id, srv, database_name_)
    bound = _tenants.get(tenant_id)
    if bound is not None:
        if bound.server.key == srv.key and bound.name == name:
            return bound
        raise _bound_elsewhere(bound)  # before creating a database nobody would use
    get_plugins().hook.tenant_schema_create_database(dialect=srv.dialect, server=srv, name=name)
    return _bind(tenant_id, srv, name)


def get_tenant_db(tenant_id: str, server: str | None = None, *, database_name_: str | None = None) -> TenantDatabase:
    """The tenant's database, without creating it.

    Raises ``TenantDatabaseDoesNotExist`` when it is not on the server.
    """
    validate_tenant_id(tenant_id)
    bound = _tenants.get(tenant_id)
    if bound is not None and server in (None, bound.server.key):
        if database_name_ is not None:
            _valid_name(database_name_, bound.server)
        return bound
    srv = get_server(server)
    name = _name(tenant_id, srv, database_name_)
    if not get_plugins().hook.tenant_schema_database_exists(dialect=srv.dialect, server=srv, name=name):
        raise TenantDatabaseDoesNotExist(
            f"tenant {tenant_id!r} has no database {name!r} on server {srv.key!r}"
        )
    return _bind(tenant_id, srv, name)


def drop_tenant_db(tenant_id: str, server: str | None = None, *, database_name_: str | None = None) -> bool:
    """Drop the tenant's database (or schema) and forget its alias.

    Dropping data is always explicit: nothing in tenant-schema calls this
    except ``tenant_drop --purge`` and your own code.
    """
    validate_tenant_id(tenant_id)
    srv = get_server(server)
    name = _name(tenant_id, srv, database_name_)
    with _tenants_lock:
        bound = _tenants.pop(tenant_id, None)
    if bound is not None:
        _unbind(bound)
    else:
        unregister_alias(f"{ALIAS_PREFIX}{tenant_id}")
    return get_plugins().hook.tenant_schema_drop_database(dialect=srv.dialect, server=srv, name=name)


async def aget_or_create_tenant_db(tenant_id: str, server: str | None = None) -> TenantDatabase:
    """Async twin of ``get_or_create_tenant_db``."""
    return await sync_to_async(get_or_create_tenant_db)(tenant_id, server)


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
