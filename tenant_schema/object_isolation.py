"""An object loaded from a tenant's database is used on that database only.

``TenantRouter`` sees one object at a time: ``save()``, ``delete()``,
``refresh_from_db()`` and related-object access pass it as the ``instance``
hint, and the router raises ``CrossTenantAccess`` when it does not come
from the current tenant. Django's other paths that take objects give the
router none, so a ``bulk_update`` of tenant B's objects inside tenant A's
context would write A's rows that happen to share B's keys. ``install()``
(run once by ``TenantSchemaConfig.ready``) adds the check where the objects
are:

- ``QuerySet.bulk_update`` (and ``abulk_update``, which calls it);
- ``QuerySet.bulk_create`` (and ``abulk_create``) when the router picks the
  database: an object that came from another tenant is refused, a new one
  (``_state.db is None``) goes to the current tenant. With ``using(alias)``
  it is Django's explicit copy, as ``save(using=alias)`` is;
- ``remove()`` and ``set()`` of reverse foreign-key and many-to-many
  managers (and their ``a*`` twins); ``add()`` was already refused by the
  router's ``allow_relation``;
- an object used as a query value: ``filter(category=obj)``, ``exclude``,
  ``get``, ``Q``, ``category__in=[...]``, querysets combined with ``|``,
  inner querysets, ``update(category=obj)``. The query remembers the
  database each such object came from and refuses to run anywhere else, so
  a queryset built in one tenant and evaluated in another is refused too;
- ``refresh_from_db(using=..., from_queryset=...)``.

The rule is the same everywhere: an object whose ``_state.db`` is a tenant
alias is only used on that database, whether the router picked it or
``using()`` named it. Unsaved objects (``_state.db is None``) go anywhere,
and plain keys (``category_id=3``) are values, never checked. Objects of
shared models never carry a tenant alias, so for them each check is one
string comparison.

Why wrappers: bulk operations send no signals, ``m2m_changed`` carries
primary keys rather than objects, and the router is called without the
objects. A tenant-aware manager or queryset would need every tenant model
(and every ``register_table`` model) to opt in, and would miss managers
Django builds itself. The wrappers cover every model, querysets that
override these methods and call ``super()`` included, and do nothing
unless an object from a tenant database is involved. Only Django methods
are wrapped, once, in place; ``install()`` is idempotent. The public ones
(``bulk_create``, ``bulk_update``, ``refresh_from_db``) are wrapped here;
the query and related-manager internals through
``tenant_schema.django_private``, which this module leaves to know them.
"""

from __future__ import annotations

import functools
from typing import Any

from django.db.models import Model, QuerySet

from . import django_private
from .exceptions import CrossTenantAccess
from .routers import is_tenant_alias, is_tenant_model

# A note on a Query (django_private.query_note): ((alias, "Category 3"), ...),
# one entry per tenant alias its object values came from. A tuple, never
# mutated: clones of the query share it safely.
QUERY_ORIGINS = "_tenant_schema_origins"

_installed = False


def _origin(obj: Any) -> str | None:
    """The tenant alias ``obj`` was loaded from (or saved to), if it is a model object from one."""
    if not isinstance(obj, Model):
        return None
    db = obj._state.db
    return db if is_tenant_alias(db) else None


def _describe(obj: Model) -> str:
    return f"{type(obj).__name__} {obj.pk!r}"


def _refuse(description: str, origin: str, action: str, target: str) -> CrossTenantAccess:
    return CrossTenantAccess(
        f"{description} was loaded from {origin!r}, but {action} runs on {target!r}: "
        "an object is only used on the database it came from"
    )


def check_objects(objs, target: str, action: str) -> None:
    """``CrossTenantAccess`` if one of ``objs`` came from a tenant database other than ``target``."""
    for obj in objs:
        origin = _origin(obj)
        if origin is not None and origin != target:
            raise _refuse(_describe(obj), origin, action, target)


def _write_db(queryset: QuerySet) -> str:
    return django_private.queryset_db_for_write(queryset)


def _listed(objs):
    return objs if isinstance(objs, (list, tuple)) else list(objs)


# -- bulk_create / bulk_update -----------------------------------------------------


def _wrap_bulk_create(original):
    @functools.wraps(original)
    def bulk_create(self, objs, *args, **kwargs):
        if django_private.queryset_alias(self) is None and is_tenant_model(self.model):  # routed: the current tenant
            objs = _listed(objs)
            if any(_origin(obj) for obj in objs):
                check_objects(objs, _write_db(self), "bulk_create()")
        return original(self, objs, *args, **kwargs)

    return bulk_create


def _wrap_bulk_update(original):
    @functools.wraps(original)
    def bulk_update(self, objs, *args, **kwargs):
        if is_tenant_model(self.model):
            objs = _listed(objs)
            if any(_origin(obj) for obj in objs):
                check_objects(objs, _write_db(self), "bulk_update()")
        return original(self, objs, *args, **kwargs)

    return bulk_update


# -- relation managers ---------------------------------------------------------------


def _checked_manager(manager_cls):
    """A subclass of a related manager class whose ``remove``/``set`` check their objects."""

    def target(manager) -> str:
        return django_private.manager_db_for_write(manager)

    def check(manager, objs, method: str) -> None:
        if any(_origin(obj) for obj in objs) and is_tenant_model(manager.model):
            name = django_private.related_manager_name(manager)
            check_objects(objs, target(manager), f"{type(manager.instance).__name__}.{name}.{method}")

    namespace: dict[str, Any] = {"__module__": manager_cls.__module__, "__qualname__": manager_cls.__qualname__}
    if hasattr(manager_cls, "remove"):  # a reverse foreign key has remove() only when it is nullable

        def remove(self, *objs, **kwargs):
            check(self, objs, "remove()")
            return super(checked, self).remove(*objs, **kwargs)

        remove.alters_data = True
        namespace["remove"] = remove

    def set(self, objs, **kwargs):
        objs = tuple(objs)
        check(self, objs, "set()")
        return super(checked, self).set(objs, **kwargs)

    set.alters_data = True
    namespace["set"] = set
    checked = type(manager_cls.__name__, (manager_cls,), namespace)
    return checked


# -- objects as query values -------------------------------------------------------------


def _value_origins(value) -> list[tuple[str, str]]:
    """Tenant aliases of the objects in a relation lookup's value (one object or an iterable)."""
    if django_private.is_sql_query(value):
        return []
    if hasattr(value, "_meta"):
        values = (value,)
    elif hasattr(value, "__iter__") and not isinstance(value, (str, bytes)):
        values = value
    else:
        return []
    found = []
    for obj in values:
        origin = _origin(obj)
        if origin is not None:
            found.append((origin, _describe(obj)))
    return found


def _remember(query, found) -> None:
    """Add ``found`` (alias, description) pairs to the query's origins, one per alias."""
    known = django_private.query_note(query, QUERY_ORIGINS) or ()
    aliases = {alias for alias, _ in known}
    added = []
    for alias, description in found:
        if alias not in aliases:
            aliases.add(alias)
            added.append((alias, description))
    if added:
        django_private.set_query_note(
            query, QUERY_ORIGINS, known + tuple(added)
        )  # a new tuple: clones share the old one


def _note_relation_value(query, value) -> None:
    """A relation lookup's value: remember the tenant databases of the objects in it."""
    found = _value_origins(value)
    if found:
        _remember(query, found)


def _note_combined(query, other) -> None:
    """``query`` took ``other``'s conditions (``|``, ``&``), and so the databases its objects came from."""
    theirs = django_private.query_note(other, QUERY_ORIGINS)
    if theirs:
        _remember(query, theirs)


def _check_query_target(query, compiler) -> None:
    """Refuse a query about to run on another database than its objects came from."""
    origins = django_private.query_note(query, QUERY_ORIGINS)
    updated = django_private.update_query_values(query)
    if origins or updated is not None:
        target = compiler.connection.alias
        for origin, description in origins or ():
            if origin != target:
                raise _refuse(description, origin, "this query", target)
        if updated is not None:  # update(category=obj)
            check_objects(updated, target, "this update")


# -- refresh_from_db ---------------------------------------------------------------------


def _wrap_refresh_from_db(original):
    @functools.wraps(original)
    def refresh_from_db(self, using=None, fields=None, from_queryset=None):
        # Without either argument the router checks the instance hint.
        if (using is not None or from_queryset is not None) and _origin(self) is not None:
            target = using or django_private.queryset_db_for_read(from_queryset)
            check_objects((self,), target, "refresh_from_db()")
        return original(self, using=using, fields=fields, from_queryset=from_queryset)

    return refresh_from_db


def install() -> None:
    """Wrap the Django methods listed in the module docstring (once per process)."""
    global _installed
    if _installed:
        return
    _installed = True
    QuerySet.bulk_create = _wrap_bulk_create(QuerySet.bulk_create)
    QuerySet.bulk_update = _wrap_bulk_update(QuerySet.bulk_update)
    Model.refresh_from_db = _wrap_refresh_from_db(Model.refresh_from_db)
    django_private.after_relation_lookup(_note_relation_value)
    django_private.after_query_combine(_note_combined)
    django_private.before_query_runs(_check_query_target)
    django_private.wrap_related_manager_classes(_checked_manager)
