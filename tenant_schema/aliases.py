"""Connection aliases of tenant databases, and the per-process caps on connections and aliases.

Each tenant gets its own alias, added to ``connections.settings`` lazily on
first use (10,000 tenants cost nothing at start-up), under a lock and
idempotently, with every setting Django would have defaulted filled in by
Django's own ``configure_settings`` (Django applies defaults only once, so a
half-filled alias added later fails on ``TIME_ZONE`` or ``OPTIONS``).

**Open connections** of every alias tenant-schema owns (tenants', tenants'
reached as the server's user, and the servers' own, used to create
databases) are capped per process by ``TENANT_SCHEMA["MAX_OPEN_CONNECTIONS"]``,
across threads and async tasks. The cap is checked right before each
physical connect: past it, the thread closes its own least recently used
idle connection; with none, it asks the threads holding idle ones to close
them and waits (``CONNECTION_WAIT_TIMEOUT``) for a slot, then fails with
``ConnectionLimitReached``. Django connections belong to the thread (or
async context) that opened them, so a connection owned by another live
thread is closed by that thread, at its next tenant query or at the end of
its request; one left by a thread that has ended is closed by the waiter.

**Aliases** are bounded too (``MAX_ALIASES``): registering one past the
bound removes the least recently used idle ones from ``connections.settings``
(never one with a connection open or opening in any thread, never one a
thread has just asked for). A thread drops its own connection objects of
forgotten aliases as it makes new ones, so memory follows the caps, not
the number of tenants ever touched.

**Shared connections** (``SharedConnections``): the aliases of schema
tenants on one server (``?shared_connections=true``) borrow the physical
connections of one per-process set instead of opening their own, and give
them back when closed. The cap then counts physical connections: a lent one
through the wrapper holding it, an idle one as a connection of its own.

Every alias prefix tenant-schema uses is spelled here, once.
"""

from __future__ import annotations

import copy
import os
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.core.signals import request_finished
from django.db import DEFAULT_DB_ALIAS, connections

from . import conf, django_private
from .exceptions import TenantSchemaError

#: Prefix of tenant aliases: ``tenant:<slug>``.
ALIAS_PREFIX = "tenant:"
#: Server-level aliases (``CREATE DATABASE``) and tenant databases reached as
#: the server's own user start with this; they hold no tenant-app tables.
INTERNAL_ALIAS_PREFIX = "tenant_schema:"
ADMIN_ALIAS_PREFIX = f"{INTERNAL_ALIAS_PREFIX}admin:"
SERVER_ALIAS_PREFIX = f"{INTERNAL_ALIAS_PREFIX}server:"
#: Aliases whose connections ``MAX_OPEN_CONNECTIONS`` counts: all of ours.
CAPPED_PREFIXES = (ALIAS_PREFIX, INTERNAL_ALIAS_PREFIX)
#: Aliases ``MAX_ALIASES`` bounds: one or two per tenant (a server has one, kept).
EVICTABLE_PREFIXES = (ALIAS_PREFIX, ADMIN_ALIAS_PREFIX)
#: ``MAX_ALIASES`` when unset: this many times ``MAX_OPEN_CONNECTIONS``.
ALIASES_PER_CONNECTION = 10
#: A waiting thread looks again this often (for threads that ended, and closes it was not told of).
WAIT_POLL_SECONDS = 0.1


class ConnectionLimitReached(TenantSchemaError):
    """No connection slot became free within ``CONNECTION_WAIT_TIMEOUT`` (see ``MAX_OPEN_CONNECTIONS``)."""


# -- settings ------------------------------------------------------------------


def max_open_connections() -> int:
    """``TENANT_SCHEMA["MAX_OPEN_CONNECTIONS"]``, checked."""
    cap = conf.get("MAX_OPEN_CONNECTIONS")
    if isinstance(cap, bool) or not isinstance(cap, int) or cap < 1:
        raise ImproperlyConfigured(f'TENANT_SCHEMA["MAX_OPEN_CONNECTIONS"] must be a positive integer, not {cap!r}')
    return cap


def connection_wait_timeout() -> float:
    """``TENANT_SCHEMA["CONNECTION_WAIT_TIMEOUT"]`` in seconds, checked."""
    timeout = conf.get("CONNECTION_WAIT_TIMEOUT")
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not timeout >= 0:
        raise ImproperlyConfigured(
            f'TENANT_SCHEMA["CONNECTION_WAIT_TIMEOUT"] must be a number of seconds (0 or more), not {timeout!r}'
        )
    return float(timeout)


def max_aliases() -> int:
    """``TENANT_SCHEMA["MAX_ALIASES"]``, or ``ALIASES_PER_CONNECTION`` times the connection cap."""
    bound = conf.get("MAX_ALIASES")
    if bound is None:
        return ALIASES_PER_CONNECTION * max_open_connections()
    if isinstance(bound, bool) or not isinstance(bound, int) or bound < 1:
        raise ImproperlyConfigured(f'TENANT_SCHEMA["MAX_ALIASES"] must be a positive integer or None, not {bound!r}')
    return bound


# -- aliases -------------------------------------------------------------------

_alias_lock = threading.Lock()
#: Evictable aliases registered in this process, least recently used first.
_alias_order: OrderedDict[str, None] = OrderedDict()
#: thread id -> (thread, the alias it asked for last): that alias is not
#: evicted between the thread's check that it is registered and its use.
_pins: dict[int, tuple[threading.Thread, str]] = {}
#: This thread's connection objects of evictable aliases (see ``_sweep_own``).
_local = threading.local()


def pin_alias(alias: str) -> None:
    """Keep ``alias`` registered while this thread is about to use it (until it asks for another)."""
    if alias.startswith(EVICTABLE_PREFIXES):
        _pins[threading.get_ident()] = (threading.current_thread(), alias)
        try:
            _alias_order.move_to_end(alias)
        except KeyError:
            pass


def register_alias(alias: str, settings_dict: dict[str, Any]) -> None:
    """Add ``alias`` to Django's connections with every setting filled in.

    Past ``MAX_ALIASES``, the least recently used idle tenant aliases are
    removed in the same step.
    """
    if alias in connections.settings:
        touch(alias)
        return
    pin_alias(alias)
    evicted: list[str] = []
    with _alias_lock:
        if alias in connections.settings:
            return
        filled = {DEFAULT_DB_ALIAS: {"ENGINE": "django.db.backends.dummy"}, alias: copy.deepcopy(settings_dict)}
        connections.configure_settings(filled)
        new_settings = {**connections.settings, alias: filled[alias]}
        if alias.startswith(EVICTABLE_PREFIXES):
            _alias_order[alias] = None
            evicted = _evict_idle_aliases(new_settings, keep=alias)
        _publish(new_settings)
    _drop_own_wrappers(evicted)


def _publish(new_settings: dict[str, Any]) -> None:
    """Replace ``connections.settings`` with a new dict (copy-on-write).

    Django iterates that dict in every thread (``close_old_connections`` at
    each request end); adding a key in place while another thread iterates
    raises "dictionary changed size during iteration". A fresh dict leaves
    running iterations on the old one. ``settings.DATABASES`` keeps the
    site's own aliases only, so test runners never see tenant aliases.
    """
    connections.settings = new_settings


def _pinned_aliases() -> set[str]:
    """Aliases live threads asked for last; forgets the pins of threads that ended."""
    pinned = set()
    for ident, entry in list(_pins.items()):
        thread, alias = entry
        if thread.is_alive():
            pinned.add(alias)
        elif _pins.get(ident) is entry:
            _pins.pop(ident, None)
    return pinned


def _evict_idle_aliases(new_settings: dict[str, Any], *, keep: str) -> list[str]:
    """Take the least recently used idle aliases past ``MAX_ALIASES`` out of ``new_settings``.

    Called under ``_alias_lock``.
    """
    excess = len(_alias_order) - max_aliases()
    if excess <= 0:
        return []
    busy = _open.aliases_in_use() | _pinned_aliases() | {keep}
    evicted = []
    for alias in list(_alias_order):
        if excess <= 0:
            break
        if alias in busy:
            continue
        _alias_order.pop(alias, None)
        new_settings.pop(alias, None)
        evicted.append(alias)
        excess -= 1
    return evicted


def release_alias(alias: str) -> bool:
    """Forget ``alias`` now if no thread has it open or is about to use it; True if forgotten.

    For code that touches a tenant once (a listing checking every tenant):
    the alias it added goes at once instead of waiting for ``MAX_ALIASES``.
    """
    if alias not in connections.settings or not alias.startswith(EVICTABLE_PREFIXES):
        return False
    me = threading.get_ident()
    entry = _pins.get(me)
    if entry is not None and entry[1] == alias:
        _pins.pop(me, None)
    with _alias_lock:
        if alias not in connections.settings or alias in _open.aliases_in_use() | _pinned_aliases():
            return False
        _alias_order.pop(alias, None)
        _publish({key: value for key, value in connections.settings.items() if key != alias})
    _drop_own_wrappers([alias])
    return True


def _own_aliases() -> set[str]:
    try:
        return _local.aliases
    except AttributeError:
        _local.aliases = set()
        _local.sweep_at = 0
        return _local.aliases


def _drop_own_wrappers(aliases: list[str]) -> None:
    """Throw away this thread's closed connection objects of forgotten ``aliases``."""
    mine = _own_aliases()
    for alias in aliases:
        if alias in connections.settings:
            continue  # registered again meanwhile
        if _initialized(alias):
            if _is_open(connections[alias]):
                continue  # closed by request end or the cap (see _on_request_finished)
            del connections[alias]
        mine.discard(alias)


def _sweep_own(keep: str) -> None:
    """Past ``MAX_ALIASES`` connection objects, drop this thread's closed ones of forgotten aliases.

    Other threads forget aliases this thread used; its objects for them are
    only reachable from here. Amortised: the next sweep waits until as many
    objects again are made.
    """
    mine = _own_aliases()
    bound = max_aliases()
    if len(mine) <= max(bound, _local.sweep_at):
        return
    for alias in list(mine):
        if alias == keep or alias in connections.settings:
            continue
        if not _initialized(alias):
            mine.discard(alias)
        elif not _is_open(connections[alias]):
            del connections[alias]
            mine.discard(alias)
    _local.sweep_at = len(mine) + bound


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
        _alias_order.pop(alias, None)
        if alias in connections.settings:
            if _initialized(alias):
                connections[alias].close()
                del connections[alias]
            _publish({key: value for key, value in connections.settings.items() if key != alias})


# -- open-connection cap ------------------------------------------------------


class _Entry:
    """One connection counted against the cap: open, or being opened."""

    __slots__ = ("alias", "closing", "connecting", "owner", "ref", "share", "thread")

    def __init__(self, wrapper, share: SharedConnections | None = None) -> None:
        self.ref = weakref.ref(wrapper)
        self.alias: str = wrapper.alias
        self.share = share
        self.owner = threading.get_ident()
        self.thread = threading.current_thread()
        self.connecting = True
        self.closing = False


class _OpenConnections:
    """The connections of this process that ``MAX_OPEN_CONNECTIONS`` counts, least recently used first."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.changed = threading.Condition(self.lock)
        # id(wrapper) -> entry; only connections open or being opened
        self.order: OrderedDict[int, _Entry] = OrderedDict()
        # thread id -> ids of wrappers that thread should close
        self.pending: dict[int, set[int]] = {}
        self.waiting = 0
        # every SharedConnections of the process: their idle connections count too
        self.shares: list[SharedConnections] = []

    # -- bookkeeping (under the lock) --

    def _prune(self) -> None:
        for key, entry in list(self.order.items()):
            wrapper = entry.ref()
            if wrapper is None or (not entry.connecting and not _is_open(wrapper)):
                del self.order[key]
        for owner, keys in list(self.pending.items()):
            keys.intersection_update(self.order.keys())
            if not keys:
                del self.pending[owner]

    def _count(self) -> int:
        """Physical connections: open wrappers' (lent ones included) and the shares' idle ones."""
        return len(self.order) + sum(len(share.idle) for share in self.shares)

    def _own_idle(self, me: int) -> _Entry | None:
        for entry in self.order.values():
            wrapper = entry.ref()
            if (
                entry.owner == me
                and not entry.connecting
                and not entry.closing
                and wrapper is not None
                and not wrapper.in_atomic_block
            ):
                return entry
        return None

    def _own_idle_on(self, me: int, share: SharedConnections) -> _Entry | None:
        """This thread's least recently used wrapper holding a connection of ``share`` with no transaction open."""
        for entry in self.order.values():
            wrapper = entry.ref()
            if (
                entry.share is share
                and entry.owner == me
                and not entry.connecting
                and not entry.closing
                and wrapper is not None
                and not wrapper.in_atomic_block
                and wrapper.autocommit
            ):
                return entry
        return None

    def _close_idle_shared(self) -> bool:
        """Close one idle shared connection (the longest idle of the fullest share); False when there is none."""
        shares = [share for share in self.shares if share.idle]
        if not shares:
            return False
        max(shares, key=lambda share: len(share.idle)).close_idle(1)
        return True

    def _orphan(self) -> _Entry | None:
        """An open connection of a thread that has ended (nobody else will close it before GC)."""
        for entry in self.order.values():
            if not entry.connecting and not entry.closing and not entry.thread.is_alive():
                return entry
        return None

    def _ask_others(self, me: int, how_many: int) -> None:
        asked = 0
        for key, entry in self.order.items():
            if asked >= how_many:
                break
            wrapper = entry.ref()
            if entry.owner == me or entry.connecting or entry.closing or wrapper is None or wrapper.in_atomic_block:
                continue
            self.pending.setdefault(entry.owner, set()).add(key)
            asked += 1

    # -- the cap --

    def admit(self, wrapper) -> None:
        """Wait for a slot for ``wrapper``'s physical connect (its thread, right before it connects).

        A wrapper on shared connections takes, in order: an idle connection
        of its share (nothing new is opened), the connection of this
        thread's least recently used idle wrapper on the same share (closed
        for it), a free slot (a new connection). Past the cap any connect
        may close an idle shared connection for its slot.
        """
        cap = max_open_connections()
        me = threading.get_ident()
        share = shared_connections_of(wrapper.settings_dict)
        if self.pending.get(me):
            self.close_pending()
        deadline = None
        asked = 0
        while True:
            with self.lock:
                self._prune()
                victim = None
                if share is not None:
                    if share.reserve_idle():
                        self.order[id(wrapper)] = _Entry(wrapper, share)
                        return
                    victim = self._own_idle_on(me, share)
                if victim is None:
                    if self._count() < cap:
                        self.order[id(wrapper)] = _Entry(wrapper, share)
                        return
                    if self._close_idle_shared():
                        continue
                    victim = self._own_idle(me) or self._orphan()
                if victim is None:
                    now = time.monotonic()
                    if deadline is None:
                        deadline = now + connection_wait_timeout()
                    if now >= deadline:
                        raise self._limit_error(wrapper, cap)
                    asked += 1
                    self._ask_others(me, asked)
                    self.waiting += 1
                    try:
                        self.changed.wait(min(deadline - now, WAIT_POLL_SECONDS))
                    finally:
                        self.waiting -= 1
                    continue
                victim.closing = True
            try:
                _close_entry(victim, me)
            except Exception:  # noqa: BLE001 - Django's close() forgets the connection even when it fails
                pass

    def _limit_error(self, wrapper, cap: int) -> ConnectionLimitReached:
        return ConnectionLimitReached(
            f"cannot connect {wrapper.alias!r}: this process already has {self._count()} tenant-schema "
            f'connections open, the most TENANT_SCHEMA["MAX_OPEN_CONNECTIONS"] ({cap}) allows, and none '
            f'became free within TENANT_SCHEMA["CONNECTION_WAIT_TIMEOUT"] ({connection_wait_timeout():g} s). '
            "Threads close idle tenant connections at their next tenant query or request end; raise "
            "MAX_OPEN_CONNECTIONS (keeping it, times the number of processes, below the database "
            "server's max_connections) or CONNECTION_WAIT_TIMEOUT"
        )

    def settle(self, wrapper) -> None:
        """After ``wrapper.connect()`` returned or failed."""
        with self.lock:
            entry = self.order.get(id(wrapper))
            if entry is None or entry.ref() is not wrapper:
                return
            entry.connecting = False
            if entry.share is not None:
                entry.share.unreserve()  # a connect that failed before borrowing it
            if _is_open(wrapper):
                self.order.move_to_end(id(wrapper))
            else:
                del self.order[id(wrapper)]
                self.changed.notify_all()

    def closed(self, wrapper) -> None:
        """After ``wrapper.close()``: its slot is free."""
        if _is_open(wrapper):
            return
        with self.lock:
            entry = self.order.get(id(wrapper))
            if entry is not None and entry.ref() is wrapper and not entry.connecting:
                del self.order[id(wrapper)]
            if self.waiting:
                self.changed.notify_all()

    def touch(self, alias: str) -> None:
        me = threading.get_ident()
        if self.pending.get(me):
            self.close_pending()
        current = connections.settings.get(alias)
        wrapper = connections[alias] if current is not None and _initialized(alias) else None
        if wrapper is not None and wrapper.settings_dict is not current and not wrapper.in_atomic_block:
            # The alias was registered again (its tenant moved, or it was
            # forgotten while idle) after this thread connected: drop the
            # wrapper built from the old settings.
            wrapper.close()
            del connections[alias]
            wrapper = None
        if wrapper is not None and id(wrapper) in self.order:
            with self.lock:
                if id(wrapper) in self.order:
                    self.order.move_to_end(id(wrapper))

    def open_count(self) -> int:
        with self.lock:
            self._prune()
            return self._count()

    def close_idle_shared(self) -> None:
        """Close every idle shared connection."""
        with self.lock:
            for share in self.shares:
                share.close_idle(len(share.idle))
            if self.waiting:
                self.changed.notify_all()

    def aliases_in_use(self) -> set[str]:
        """Aliases with a connection open, or being opened, in some thread."""
        with self.lock:
            self._prune()
            return {entry.alias for entry in self.order.values()}

    def closable(self, wanted: Callable[[str], bool]) -> list[_Entry]:
        """Open connections of the aliases ``wanted`` accepts that this thread may close now.

        Its own, and those of threads that have ended; other threads are
        asked to close theirs.
        """
        me = threading.get_ident()
        found = []
        with self.lock:
            self._prune()
            for key, entry in self.order.items():
                if entry.connecting or entry.closing or not wanted(entry.alias):
                    continue
                if entry.owner == me or not entry.thread.is_alive():
                    entry.closing = entry.owner != me
                    found.append(entry)
                else:
                    self.pending.setdefault(entry.owner, set()).add(key)
        return found

    def close_pending(self) -> None:
        """Close what other threads asked this one to close (idle connections only)."""
        me = threading.get_ident()
        with self.lock:
            keys = self.pending.pop(me, set())
            entries = [self.order[key] for key in keys if key in self.order]
        for entry in entries:
            wrapper = entry.ref()
            if wrapper is not None and entry.owner == me and not wrapper.in_atomic_block:
                wrapper.close()


def _is_open(wrapper) -> bool:
    return wrapper is not None and wrapper.connection is not None and not wrapper.closed_in_transaction


def _close_entry(entry: _Entry, me: int) -> None:
    """Close an idle connection of this thread, or one left by a thread that has ended."""
    wrapper = entry.ref()
    if wrapper is None:
        return
    try:
        if entry.owner == me:
            wrapper.close()
        else:  # its thread is gone: nobody uses it; Django asks for thread sharing to close it here
            wrapper.inc_thread_sharing()
            try:
                wrapper.close()
            finally:
                wrapper.dec_thread_sharing()
    except Exception:  # a failed close leaves it to be picked again
        entry.closing = False
        raise


# -- connections shared by many aliases ---------------------------------------------

#: The settings key (of an alias's settings dict) holding its ``SharedConnections``.
SHARED_CONNECTIONS_SETTING = "TENANT_SCHEMA_SHARED_CONNECTIONS"
#: An idle shared connection unused for this long is closed at its share's next use.
SHARED_IDLE_SECONDS = 300.0


def shared_connections_of(settings_dict: dict[str, Any]) -> SharedConnections | None:
    """The ``SharedConnections`` an alias borrows its connections from, if any."""
    share = settings_dict.get(SHARED_CONNECTIONS_SETTING)
    return share if isinstance(share, SharedConnections) else None


class SharedConnections:
    """Physical connections to one database that many aliases borrow in turn; one set per process.

    The aliases stay their own (each tenant's wrapper, settings and cursor
    class); a wrapper's connect borrows an idle connection from here when
    there is one instead of opening a new one, and its close gives the
    connection back instead of ending it. A dialect subclasses this class
    for its driver (``lend``, ``reclaim``, ``usable``) and puts the object
    in a tenant alias's settings under ``SHARED_CONNECTIONS_SETTING``.

    ``MAX_OPEN_CONNECTIONS`` counts physical connections: a lent one
    through the wrapper holding it, an idle one here as a connection of its
    own (see ``_OpenConnections.admit``). The idle list is guarded by the
    cap's lock; the most recently given back is lent first.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        #: (connection, monotonic time it was given back), the most recent last.
        self.idle: list[tuple[Any, float]] = []
        #: Connections lent to wrappers now.
        self.lent: weakref.WeakSet[Any] = weakref.WeakSet()
        #: Connections a forked child inherited: neither used nor closed there (the parent's sessions).
        self.inherited: list[Any] = []
        self._foreign: weakref.WeakSet[Any] = weakref.WeakSet()
        self._reserved = threading.local()
        with _open.lock:
            _open.shares.append(self)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}: {len(self.idle)} idle>"

    def __copy__(self) -> SharedConnections:
        return self  # settings dicts are copied (register_alias); the share is one per process

    def __deepcopy__(self, memo: dict) -> SharedConnections:
        return self

    # -- the dialect's part ---------------------------------------------------------

    def lend(self, connection: Any, wrapper: Any, conn_params: dict[str, Any]) -> None:
        """Make ``connection`` (idle, or just opened for ``wrapper``) ``wrapper``'s; raising discards it."""

    def reclaim(self, connection: Any) -> bool:
        """Take ``connection`` back from a wrapper (end its transaction); False if it cannot serve again."""
        return True

    def usable(self, connection: Any) -> bool:
        """Whether an idle ``connection`` can be lent (a cheap check, no round trip)."""
        return True

    def close_connection(self, connection: Any) -> None:
        try:
            connection.close()
        except Exception:  # noqa: BLE001 - it is being thrown away
            pass

    # -- what wrappers call (django_private.borrow_connections) ----------------------

    def borrow(self, wrapper: Any, connect: Callable[[], Any], conn_params: dict[str, Any]) -> Any:
        """The physical connection of ``wrapper``'s connect: the one ``admit`` reserved, else a new one."""
        connection = getattr(self._reserved, "connection", None)
        self._reserved.connection = None
        if connection is None:
            connection = connect()  # admit counted it
        try:
            self.lend(connection, wrapper, conn_params)
        except BaseException:
            self.close_connection(connection)
            raise
        self.lent.add(connection)
        return connection

    def give_back(self, wrapper: Any, connection: Any) -> None:
        """``wrapper`` closed: ``connection`` goes back to the idle list, or is closed if unfit."""
        self.lent.discard(connection)
        if connection in self._foreign:  # lent in the parent process: its session, not ours
            self.inherited.append(connection)
            return
        keep = False
        try:
            keep = self.reclaim(connection)
        finally:
            if not keep:
                self.close_connection(connection)
        with _open.lock:
            if keep:
                self.idle.append((connection, time.monotonic()))
            if _open.waiting:
                _open.changed.notify_all()

    # -- under the cap's lock -------------------------------------------------------

    def reserve_idle(self) -> bool:
        """Set aside an idle connection for this thread's connect; False when none is usable."""
        self._expire()
        while self.idle:
            connection, _ = self.idle.pop()
            if self.usable(connection):
                self._reserved.connection = connection
                return True
            self.close_connection(connection)
        return False

    def unreserve(self) -> None:
        """Give back a connection set aside for a connect that did not borrow it."""
        connection = getattr(self._reserved, "connection", None)
        if connection is not None:
            self._reserved.connection = None
            self.idle.append((connection, time.monotonic()))

    def close_idle(self, count: int) -> None:
        """Close the ``count`` longest idle connections."""
        for connection, _ in self.idle[:count]:
            self.close_connection(connection)
        del self.idle[:count]

    def _expire(self) -> None:
        limit = time.monotonic() - SHARED_IDLE_SECONDS
        stale = 0
        while stale < len(self.idle) and self.idle[stale][1] < limit:
            stale += 1
        if stale:
            self.close_idle(stale)

    def _forget_after_fork(self) -> None:
        self.inherited.extend(connection for connection, _ in self.idle)
        self.idle = []
        self._foreign = weakref.WeakSet(self.lent)
        self.lent = weakref.WeakSet()
        self._reserved = threading.local()


_open = _OpenConnections()


def _after_fork_in_child() -> None:
    # The parent's idle connections are its sessions: a child closing one
    # would end them (libpq says goodbye on the shared socket).
    for share in _open.shares:
        share._forget_after_fork()


os.register_at_fork(after_in_child=_after_fork_in_child)


def touch(alias: str) -> None:
    """Mark ``alias`` as just used (routing calls this on every query)."""
    pin_alias(alias)
    _open.touch(alias)


def open_tenant_connections() -> int:
    """How many connections ``MAX_OPEN_CONNECTIONS`` counts in this process (tenants', servers', idle shared ones)."""
    return _open.open_count()


def close_tenant_connections() -> None:
    """Close every tenant-schema connection of this thread (servers' too); ask other threads to close theirs.

    Connections left open by threads that have ended are closed too, and
    so are the idle shared connections (``SharedConnections``). Call it at
    shutdown, and before forking worker processes.
    """
    _close_everywhere(lambda alias: alias.startswith(CAPPED_PREFIXES))
    _open.close_idle_shared()


def close_alias_connections(alias: str) -> None:
    """Close this thread's connection for ``alias``; ask other threads to close theirs."""
    _close_everywhere(lambda candidate: candidate == alias)


def _close_everywhere(wanted: Callable[[str], bool]) -> None:
    """Close this thread's connections of the aliases ``wanted`` accepts; other
    threads close theirs at their next tenant query or request end."""
    me = threading.get_ident()
    for entry in _open.closable(wanted):
        _close_entry(entry, me)
    for alias in list(connections.settings):
        if wanted(alias) and _initialized(alias):
            connections[alias].close()


@contextmanager
def released(*aliases: str) -> Iterator[None]:
    """Close this thread's connections of ``aliases`` opened inside, and forget the aliases registered inside.

    For code that visits many tenants once (listings): each visit gives its
    connection and alias back, so visiting 10,000 tenants holds one.
    """
    registered = {alias for alias in aliases if alias in connections.settings}
    was_open = {alias for alias in aliases if _initialized(alias) and _is_open(connections[alias])}
    try:
        yield
    finally:
        for alias in aliases:
            if alias not in was_open and _initialized(alias):
                wrapper = connections[alias]
                if not wrapper.in_atomic_block:
                    wrapper.close()
            if alias not in registered:
                release_alias(alias)


def _on_connection_object(wrapper) -> None:
    alias = wrapper.alias
    if not alias.startswith(CAPPED_PREFIXES):
        return
    share = shared_connections_of(wrapper.settings_dict)
    if share is not None:
        django_private.borrow_connections(wrapper, borrow=share.borrow, give_back=share.give_back)
    django_private.gate_connect(
        wrapper, before_connect=_open.admit, after_connect=_open.settle, after_close=_open.closed
    )
    if alias.startswith(EVICTABLE_PREFIXES):
        _own_aliases().add(alias)
        _sweep_own(keep=alias)


def _on_request_finished(sender, **kwargs) -> None:
    _open.close_pending()
    # Django closes the connections of registered aliases; these it cannot see.
    me = threading.get_ident()
    for entry in _open.closable(lambda alias: alias not in connections.settings):
        _close_entry(entry, me)


django_private.on_connection_object(_on_connection_object)
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
