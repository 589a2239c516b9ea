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
are wrapped, once, in place; ``install()`` is idempotent.
"""

from __future__ import annotations

import functools
from typing import Any

from django.db.models import Model, QuerySet
from django.db.models.fields import related_descriptors
from django.db.models.sql.query import Query
from django.db.models.sql.subqueries import UpdateQuery

from . import django_private
from .exceptions import CrossTenantAccess
from .routers import is_tenant_alias, is_tenant_model

# On a Query: ((alias, "Category 3"), ...), one entry per tenant alias its
# object values came from. A tuple, never mutated: Query.clone() copies the
# instance dict shallowly, so clones share it safely.
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
        if self._db is None and is_tenant_model(self.model):  # routed: the current tenant
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
            name = getattr(manager, "prefetch_cache_name", None) or manager.field.remote_field.cache_name
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


def _wrap_manager_factory(original):
    @functools.wraps(original)
    def create(*args, **kwargs):
        return _checked_manager(original(*args, **kwargs))

    return create


# -- objects as query values -------------------------------------------------------------


def _value_origins(value) -> list[tuple[str, str]]:
    """Tenant aliases of the objects in a relation lookup's value (one object or an iterable)."""
    if isinstance(value, Query):
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


def _remember(query: Query, found) -> None:
    """Add ``found`` (alias, description) pairs to the query's origins, one per alias."""
    known = query.__dict__.get(QUERY_ORIGINS, ())
    aliases = {alias for alias, _ in known}
    added = []
    for alias, description in found:
        if alias not in aliases:
            aliases.add(alias)
            added.append((alias, description))
    if added:
        query.__dict__[QUERY_ORIGINS] = known + tuple(added)  # a new tuple: clones share the old one


def _wrap_check_related_objects(original):
    @functools.wraps(original)
    def check_related_objects(self, field, value, opts):
        original(self, field, value, opts)
        if field.is_relation:
            found = _value_origins(value)
            if found:
                _remember(self, found)

    return check_related_objects


def _wrap_combine(original):
    @functools.wraps(original)
    def combine(self, rhs, connector):
        original(self, rhs, connector)
        theirs = rhs.__dict__.get(QUERY_ORIGINS)
        if theirs:
            _remember(self, theirs)

    return combine


def _wrap_get_compiler(original):
    @functools.wraps(original)
    def get_compiler(self, using=None, connection=None, elide_empty=True):
        compiler = original(self, using, connection, elide_empty)
        origins = self.__dict__.get(QUERY_ORIGINS)
        if origins or isinstance(self, UpdateQuery):
            target = compiler.connection.alias
            for origin, description in origins or ():
                if origin != target:
                    raise _refuse(description, origin, "this query", target)
            if isinstance(self, UpdateQuery):  # update(category=obj)
                check_objects((value for _, _, value in self.values), target, "this update")
        return compiler

    return get_compiler


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
    Query.check_related_objects = _wrap_check_related_objects(Query.check_related_objects)
    Query.combine = _wrap_combine(Query.combine)
    Query.get_compiler = _wrap_get_compiler(Query.get_compiler)
    Model.refresh_from_db = _wrap_refresh_from_db(Model.refresh_from_db)
    for name in ("create_reverse_many_to_one_manager", "create_forward_many_to_many_manager"):
        setattr(related_descriptors, name, _wrap_manager_factory(getattr(related_descriptors, name)))
    # A descriptor that built its manager class before now keeps it cached: forget those.
    from django.apps import apps

    for model in apps.get_models(include_auto_created=True):
        for attr in vars(model).values():
            if isinstance(attr, related_descriptors.ReverseManyToOneDescriptor):
                attr.__dict__.pop("related_manager_cls", None)
