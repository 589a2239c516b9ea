"""Connection aliases of tenant databases, and the per-process cap on open connections.

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

Every alias prefix tenant-schema uses is spelled here, once.
"""

from __future__ import annotations

import copy
import threading
import weakref
from collections import OrderedDict
from typing import Any

from django.core.signals import request_finished
from django.db import DEFAULT_DB_ALIAS, connections
from django.db.backends.signals import connection_created

from . import conf, django_private

#: Prefix of tenant aliases: ``tenant:<slug>``.
ALIAS_PREFIX = "tenant:"
#: Server-level aliases (``CREATE DATABASE``) and tenant databases reached as
#: the server's own user start with this; they hold no tenant-app tables.
INTERNAL_ALIAS_PREFIX = "tenant_schema:"
ADMIN_ALIAS_PREFIX = f"{INTERNAL_ALIAS_PREFIX}admin:"
SERVER_ALIAS_PREFIX = f"{INTERNAL_ALIAS_PREFIX}server:"

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
    return django_private.has_connection(alias)


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
            for key, (ref, _owner) in list(self.order.items()):
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


def server_alias(key: str) -> str:
    """The alias of a server's own connection (``CREATE DATABASE``)."""
    return f"{SERVER_ALIAS_PREFIX}{key}"


def admin_alias(slug: str) -> str:
    """The alias reaching a tenant's database as the server URL's user."""
    return f"{ADMIN_ALIAS_PREFIX}{slug}"


def tenant_alias(slug: str) -> str:
    """The alias of a tenant's database: ``tenant:<slug>``."""
    return f"{ALIAS_PREFIX}{slug}"
