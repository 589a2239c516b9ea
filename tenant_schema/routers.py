"""``TenantRouter``: tenant apps on the current tenant's alias, the rest on ``default``.

Tenant apps are those of ``TENANT_SCHEMA["TENANT_APPS"]`` plus the app label
of the models ``register_table`` builds (``mapping.APP_LABEL``): their tables
exist only in tenant databases, so a query that names no database must never
reach ``default``. Their tables are created by ``register_table``, not by
migrations, so ``allow_migrate`` refuses that label everywhere.

Routing fails closed: a tenant model queried with no current tenant raises
``NoTenantSelected`` instead of falling back to ``default``, and an object
loaded from one tenant is never read, written or related through another.
A write to a tenant in maintenance mode raises ``TenantUnavailable`` before
any SQL (``registry.check_writable``): everything Django routes as a write
(``save``, ``create``, ``QuerySet.update``/``delete``, ``bulk_create``,
``get_or_create``, ``select_for_update``, related managers) asks
``db_for_write``. Reads go on.
Add it to ``DATABASE_ROUTERS``::

    DATABASE_ROUTERS = ["tenant_schema.routers.TenantRouter"]
"""

from __future__ import annotations

from .databases import ALIAS_PREFIX, INTERNAL_ALIAS_PREFIX, touch
from .exceptions import CrossTenantAccess
from .registry import check_writable, current_tenant_db, tenant_app_labels
from .schema.mapping import APP_LABEL as TABLES_APP_LABEL


def is_tenant_model(model) -> bool:
    """Whether ``model`` lives in tenant databases (a tenant app's, or one ``register_table`` built)."""
    label = model._meta.app_label
    return label == TABLES_APP_LABEL or label in tenant_app_labels()


def is_tenant_alias(alias: str | None) -> bool:
    return bool(alias) and alias.startswith(ALIAS_PREFIX)


class TenantRouter:
    """Database router for database-per-tenant (see the module docstring)."""

    def _tenant_alias(self, model, hints, *, write: bool = False) -> str | None:
        if not is_tenant_model(model):
            return None
        tenant_db = current_tenant_db()  # NoTenantSelected: never a fallback to default
        if write:
            # TenantUnavailable in maintenance mode; TenantMoved for a binding made before a move.
            check_writable(tenant_db.slug, tenant_db)
        alias = tenant_db.alias
        instance = hints.get("instance")
        state = getattr(instance, "_state", None)
        if state is not None and is_tenant_alias(state.db) and state.db != alias:
            raise CrossTenantAccess(
                f"{type(instance).__name__} {instance.pk!r} was loaded from {state.db!r}, "
                f"but the current tenant is {tenant_db.slug!r}"
            )
        tenant_db.ensure_alias()
        touch(alias)
        return alias

    def db_for_read(self, model, **hints):
        return self._tenant_alias(model, hints)

    def db_for_write(self, model, **hints):
        return self._tenant_alias(model, hints, write=True)

    def allow_relation(self, obj1, obj2, **hints):
        db1, db2 = obj1._state.db, obj2._state.db
        if is_tenant_alias(db1) or is_tenant_alias(db2):
            return db1 == db2
        return None

    def allow_migrate(self, db, app_label, model_name=None, **hints):
        if app_label == TABLES_APP_LABEL:  # register_table creates these tables, never a migration
            return False
        tenant_app = app_label in tenant_app_labels()
        if is_tenant_alias(db):
            return tenant_app
        if db.startswith(INTERNAL_ALIAS_PREFIX):  # server-level connections hold no tables
            return False
        if tenant_app:
            return False
        return None
