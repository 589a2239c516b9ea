"""The Dialect base class: what differs between database engines.

Read it like Django's ``features.py`` + ``schema.py``: capability flags the
core asks (never ``if vendor == ...``), and small methods a dialect overrides.
Every method here is also reachable through a hook in ``hookspecs.py``, so a
plugin can change one behaviour of an existing dialect without subclassing it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from django.core.exceptions import ImproperlyConfigured
from django.db import models

if TYPE_CHECKING:  # pragma: no cover
    from django.db.backends.base.schema import BaseDatabaseSchemaEditor
    from django.db.backends.ddl_references import Statement

    from .servers import Server

ISOLATION_DATABASE = "database"
ISOLATION_SCHEMA = "schema"


@dataclasses.dataclass(frozen=True)
class IndexSpec:
    """One index to create: what ``create_index`` validated and named."""

    table: str
    columns: tuple[str, ...]
    unique: bool = False
    name: str = ""
    options: Mapping[str, Any] = dataclasses.field(default_factory=dict)


class Dialect:
    """Base class of every dialect; subclass it and register it with the
    ``tenant_schema_register_dialects`` hook."""

    #: The dialect's name, as shown by ``tenant_dialects`` and used by plugins
    #: to condition hooks (``if dialect.name == "postgres"``).
    name: ClassVar[str] = ""
    #: Django ``ENGINE`` of connections to this dialect.
    engine: ClassVar[str] = ""
    #: URL schemes in ``TENANT_SCHEMA["SERVERS"]`` that select this dialect.
    schemes: ClassVar[tuple[str, ...]] = ()

    # -- capability flags -------------------------------------------------
    #: DDL runs inside a transaction and rolls back with it.
    can_rollback_ddl: ClassVar[bool] = False
    #: Tenants may be isolated by schema inside one database (``?isolation=schema``).
    supports_schema_isolation: ClassVar[bool] = False
    #: ``clone_database`` can copy a template database.
    can_clone_databases: ClassVar[bool] = False
    #: Longest identifier (table, column, index, database name) the engine takes.
    max_identifier_length: ClassVar[int] = 63
    #: Indexes on TEXT/BLOB columns need a prefix of this many characters (MySQL).
    text_index_prefix_length: ClassVar[int | None] = None
    #: ``CREATE INDEX ... USING HASH`` (hash-sharded) is available (CockroachDB).
    supports_hash_sharded_indexes: ClassVar[bool] = False
    #: Every DDL statement needs its own transaction (CockroachDB).
    ddl_one_statement_per_transaction: ClassVar[bool] = False

    def __init__(self) -> None:
        if not self.name or not self.engine:
            raise ImproperlyConfigured(f"{type(self).__name__} must set name and engine")

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"

    # -- servers and databases -------------------------------------------
    def server_settings(self, parsed: dict[str, Any]) -> dict[str, Any]:
        """Adjust the ``dj-database-url`` parse of a server URL.

        ``parsed`` is already a Django settings dict for the *server* (the
        connection used to create and drop tenant databases).
        """
        return parsed

    def tenant_settings(self, server: Server, database_name: str) -> dict[str, Any]:
        """Connection settings of a tenant whose database is ``database_name``."""
        settings = dict(server.settings)
        settings["OPTIONS"] = dict(settings.get("OPTIONS", {}))
        if server.isolation == ISOLATION_SCHEMA:
            self.apply_search_path(settings, database_name)
        else:
            settings["NAME"] = database_name
        return settings

    def apply_search_path(self, settings: dict[str, Any], schema: str) -> None:
        """Point a connection at ``schema`` (schema isolation only)."""
        raise ImproperlyConfigured(f"the {self.name} dialect cannot isolate tenants by schema")

    def database_exists(self, server: Server, name: str) -> bool:
        raise NotImplementedError

    def create_database(self, server: Server, name: str) -> bool:
        raise NotImplementedError

    def drop_database(self, server: Server, name: str) -> bool:
        raise NotImplementedError

    def clone_database(self, server: Server, template: str, name: str) -> bool:
        """Copy ``template`` to ``name``; ``False`` where the dialect cannot."""
        return False

    # -- DDL ---------------------------------------------------------------
    def create_index_sql(
        self, schema_editor: BaseDatabaseSchemaEditor, model: type[models.Model], index: IndexSpec
    ) -> Statement:
        """``CREATE [UNIQUE] INDEX`` through the schema editor, quoted by it."""
        fields = [model._meta.get_field(column_field(model, c)) for c in index.columns]
        col_suffixes = tuple(self.index_column_suffix(schema_editor, f) for f in fields)
        sql = schema_editor.sql_create_unique_index if index.unique else None
        statement = schema_editor._create_index_sql(
            model, fields=fields, name=index.name, sql=sql, col_suffixes=col_suffixes
        )
        statement.parts.setdefault("nulls_distinct", "")  # part of the UNIQUE template only
        return statement

    def index_column_suffix(self, schema_editor: BaseDatabaseSchemaEditor, field: models.Field) -> str:
        """Text after a column in an index definition (a prefix length on MySQL)."""
        if self.text_index_prefix_length and field.get_internal_type() in (
            "TextField",
            "BinaryField",
            "JSONField",
        ):
            return f"({int(self.text_index_prefix_length)})"
        return ""

    def drop_index_sql(
        self,
        schema_editor: BaseDatabaseSchemaEditor,
        model: type[models.Model],
        name: str,
        constraint: bool,
    ) -> Statement:
        if constraint:
            return schema_editor._delete_constraint_sql(schema_editor.sql_delete_unique, model, name)
        return schema_editor._delete_index_sql(model, name)

    def field_for_annotation(self, annotation: Any, name: str, metadata: dict[str, Any]) -> models.Field | None:
        """Dialect-specific override of the annotation -> field mapping."""
        return None


def column_field(model: type[models.Model], column: str) -> str:
    """The model field name whose database column is ``column``."""
    for field in model._meta.concrete_fields:
        if field.column == column:
            return field.name
    valid = ", ".join(sorted(f.column for f in model._meta.concrete_fields))
    raise ValueError(f"table {model._meta.db_table!r} has no column {column!r}; columns are: {valid}")
