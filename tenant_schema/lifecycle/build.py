"""The tenant apps' schema in one database: built from the models, read back from it.

``create_from_models`` creates every table of the tenant apps from the
current models and records every migration of the plan, as if ``migrate``
had run, in one ``DDLBatch``: a single transaction where DDL rolls back,
elsewhere an undo of what it created, with the migrations recorded last, so
"recorded" means "complete". ``create_tenant_tables`` adds the
``TENANT_TABLES`` a database lacks; ``applied_migrations`` reads what a
database has applied in one query. Nothing here touches the registry.
"""

from __future__ import annotations

from typing import Any

from django.db import DatabaseError
from django.utils.module_loading import import_string

from .. import conf, django_private, registry
from ..databases import TenantDatabase
from ..migration_plan import Key, MigrationPlan
from ..registry import tenant_app_labels
from ..schema.batch import DDLBatch
from ..schema.ddl import register_tables

__all__ = ["applied_migrations", "create_from_models", "create_tenant_tables", "tenant_models", "tenant_table_specs"]


def tenant_models() -> list:
    """Concrete, managed models of the tenant apps (auto-created M2M tables come with them)."""
    from django.apps import apps

    out = []
    for label in sorted(tenant_app_labels()):
        for model in apps.get_app_config(label).get_models():
            if model._meta.managed and not model._meta.proxy and not model._meta.swapped:
                out.append(model)
    return out


def create_from_models(tenant_db: TenantDatabase, plan: MigrationPlan, *, fresh: bool = False) -> None:
    """Create the tenant apps' tables from the current models and record every migration.

    One ``DDLBatch``: a single transaction where DDL rolls back; elsewhere
    a failure undoes the tables this call created, and the migrations are
    recorded last, so "recorded" means "complete".
    """
    connection = tenant_db.connection
    models = tenant_models()
    recorder = django_private.migration_recorder(connection)
    rows = [recorder.Migration(app=app, name=name) for app, name in plan.records()]
    if not models:
        return  # no tenant apps: no tables to create, nothing to record yet
    with DDLBatch(tenant_db, hooks=False) as batch:
        if fresh or not recorder.has_table():
            batch.create_table(recorder.Migration)
        for model in models:
            batch.create_table(model)
        if batch.atomic:
            recorder.migration_qs.bulk_create(rows)
    if not batch.atomic:
        recorder.migration_qs.bulk_create(rows)  # last: "recorded" means "complete"


def tenant_table_specs() -> list[tuple[Any, ...]]:
    """``TENANT_TABLES`` with each dotted path imported."""
    specs = []
    for raw in conf.get("TENANT_TABLES"):
        parts = (raw,) if isinstance(raw, str) else tuple(raw)
        specs.append((import_string(parts[0]), *parts[1:]))
    return specs


def create_tenant_tables(tenant_db: TenantDatabase) -> None:
    """Create the ``TENANT_TABLES`` the database lacks (life-cycle work: allowed in maintenance mode)."""
    specs = tenant_table_specs()
    if specs:
        with registry.lifecycle_writes(tenant_db.slug):
            register_tables(tenant_db, specs)


def applied_migrations(tenant_db: TenantDatabase) -> set[Key] | None:
    """The tenant's ``django_migrations`` rows in one query; ``None`` without that table."""
    connection = tenant_db.connection
    qs = django_private.migration_model().objects.using(tenant_db.alias).values_list("app", "name")
    try:
        return set(qs)
    except DatabaseError:
        with connection.cursor() as cursor:
            if django_private.migration_model()._meta.db_table in connection.introspection.table_names(cursor):
                raise
        return None
