"""What a full ``migrate`` of a tenant database would do, computed once per process.

Two uses:

- onboarding: when the migrations of the tenant apps describe exactly the
  current models (Django's ``MigrationAutodetector`` finds no change) and
  contain only schema operations (no ``RunPython``/``RunSQL``/custom
  operation whose effect the models cannot show), a new tenant's tables are
  created straight from the models and every migration is recorded as
  applied, in one step instead of replaying the history;
- fleet migration: whether a tenant has anything to apply is a set
  comparison between its ``django_migrations`` rows (one query) and the
  migrations on disk, with no ``MigrationExecutor`` per tenant.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from inspect import get_annotations

from django.apps import apps
from django.core.signals import setting_changed
from django.db.migrations import operations as ops
from django.utils.module_loading import import_string

from . import conf, django_private
from .exceptions import TenantSchemaError
from .lazy import Lazy
from .registry import tenant_app_labels

Key = tuple[str, str]

#: Operations whose whole effect on the database is what the models describe.
SCHEMA_ONLY = (
    ops.CreateModel,
    ops.DeleteModel,
    ops.RenameModel,
    ops.AlterModelTable,
    ops.AlterModelTableComment,
    ops.AlterUniqueTogether,
    ops.AlterIndexTogether,
    ops.AlterOrderWithRespectTo,
    ops.AlterModelOptions,
    ops.AlterModelManagers,
    ops.AddIndex,
    ops.RemoveIndex,
    ops.RenameIndex,
    ops.AddConstraint,
    ops.RemoveConstraint,
    ops.AddField,
    ops.RemoveField,
    ops.AlterField,
    ops.RenameField,
)


@dataclass(frozen=True)
class MigrationPlan:
    """The migrations a fresh tenant database ends up with, and how to get there."""

    #: Graph nodes in the order a clean ``migrate`` applies them.
    nodes: tuple[Key, ...]
    #: node -> the migrations it replaces (squashed migrations only).
    replaces: dict[Key, tuple[Key, ...]] = field(default_factory=dict)
    #: ``None`` when tables may be created from the models; else why not.
    replay_reason: str | None = None

    #: The ``TENANT_TABLES`` setting this plan was built with (its dotted paths and names).
    tables: tuple[str, ...] = ()
    #: Tenant apps with models but not one migration (no ``migrations``
    #: package, or one holding only ``__init__.py``): no tenant database
    #: would get their tables (check ``tenant_schema.E012``).
    unmigrated: tuple[str, ...] = ()

    @property
    def direct_ok(self) -> bool:
        return self.replay_reason is None

    @property
    def fingerprint(self) -> str:
        """A digest of what a tenant at this plan holds: its migrations and ``TENANT_TABLES``.

        Recorded on a tenant's registry row (``Tenant.migrated_to``) whenever
        its schema is brought to this plan; a tenant whose fingerprint is the
        current one has nothing to apply, known without connecting to it.
        """
        payload = json.dumps([sorted(map(list, self.records())), list(self.tables)])
        return hashlib.sha256(payload.encode()).hexdigest()[:32]

    def check_complete(self) -> None:
        """``TenantSchemaError`` when a tenant app has no migrations: a new tenant would lack its tables."""
        if self.unmigrated:
            apps_named = " ".join(self.unmigrated)
            raise TenantSchemaError(
                f"tenant app{'s' if len(self.unmigrated) > 1 else ''} {', '.join(map(repr, self.unmigrated))} "
                f"ha{'ve' if len(self.unmigrated) > 1 else 's'} no migrations, so a tenant database would get no "
                f"tables for {'them' if len(self.unmigrated) > 1 else 'it'}: run `manage.py makemigrations "
                f"{apps_named}` first"
            )

    def records(self) -> list[Key]:
        """The ``django_migrations`` rows a full ``migrate`` leaves behind."""
        out: list[Key] = []
        for node in self.nodes:
            out.extend(self.replaces.get(node, ()))
            out.append(node)
        return out

    def pending(self, applied: set[Key]) -> list[Key]:
        """Nodes not applied yet, given a tenant's ``django_migrations`` rows."""
        return [
            node
            for node in self.nodes
            if node not in applied and not (node in self.replaces and all(r in applied for r in self.replaces[node]))
        ]


def migration_plan() -> MigrationPlan:
    """The process-wide plan (rebuilt after ``reset_migration_plan()`` or a settings change)."""
    return _plan.get()


def reset_migration_plan() -> None:
    _plan.reset()


def _build() -> MigrationPlan:
    loader = django_private.disk_migrations()
    graph = loader.graph
    nodes: list[Key] = []
    seen: set[Key] = set()
    for leaf in sorted(graph.leaf_nodes()):
        for node in graph.forwards_plan(leaf):
            if node not in seen:
                seen.add(node)
                nodes.append(node)
    replaces = {node: tuple(graph.nodes[node].replaces) for node in nodes if graph.nodes[node].replaces}
    tables = tuple(_table_entry(raw) for raw in conf.get("TENANT_TABLES"))
    unmigrated = _unmigrated(loader)
    return MigrationPlan(tuple(nodes), replaces, _replay_reason(loader, nodes, unmigrated), tables, unmigrated)


def _unmigrated(loader) -> tuple[str, ...]:
    """Tenant apps with managed models and no migration on disk.

    Django counts an app whose ``migrations`` package holds only
    ``__init__.py`` as migrated; it has nothing to apply all the same.
    """
    with_migrations = {app for app, _ in loader.disk_migrations}
    return tuple(
        label
        for label in sorted(tenant_app_labels())
        if label not in with_migrations
        and label in {config.label for config in apps.get_app_configs()}
        and any(model._meta.managed for model in apps.get_app_config(label).get_models())
    )


def _replay_reason(loader, nodes: list[Key], unmigrated: tuple[str, ...]) -> str | None:
    labels = tenant_app_labels()
    for label in unmigrated:
        return f"tenant app {label!r} has no migrations"
    for node in nodes:
        if node[0] not in labels:
            continue
        for operation in graph_operations(loader, node):
            if not isinstance(operation, SCHEMA_ONLY) or type(operation).__module__.split(".")[:3] != [
                "django",
                "db",
                "migrations",
            ]:
                return f"migration {node[0]}.{node[1]} has a {type(operation).__name__} operation"
    changed = sorted(django_private.changed_apps(loader, apps, labels))
    if changed:
        return f"the models of {', '.join(changed)} differ from their migrations (run makemigrations)"
    return None


def _table_entry(raw) -> str:
    """One ``TENANT_TABLES`` entry with its class's fields (names and annotations), for the fingerprint.

    A field added to a table's class changes the fingerprint, so clone
    templates and pooled databases built before it are not taken as current.
    """
    parts = [raw] if isinstance(raw, str) else list(raw)
    try:
        cls = import_string(parts[0])
        fields = [[name, repr(annotation)] for name, annotation in get_annotations(cls).items()]
    except Exception:  # noqa: BLE001 - a bad path is reported where the table is created
        fields = []
    return json.dumps([parts, fields], default=str)


def graph_operations(loader, node: Key):
    return loader.graph.nodes[node].operations


def _clear(*, setting: str, **kwargs) -> None:
    if setting in ("MIGRATION_MODULES", "INSTALLED_APPS", "TENANT_SCHEMA"):
        reset_migration_plan()


setting_changed.connect(_clear)


_plan: Lazy[MigrationPlan] = Lazy(_build)
