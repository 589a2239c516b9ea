"""The plugin contract: every hook a dialect plugin may implement.

A plugin is a module (or object) with functions decorated by
``tenant_schema.hookimpl`` whose names match the specs below, announced through
the ``tenant_schema`` entry-point group. The four built-in dialects under
``adapters/`` are plugins of exactly this kind.

Rules for keeping this contract stable (learned from pytest and datasette):
hooks and their arguments are never renamed once published, only added; an
implementation may accept fewer arguments than the spec offers; every hook has a
section in ``docs/plugins.md`` (a test enforces it).

Most ``firstresult`` hooks have a default implementation, registered first so
that it runs last, which delegates to the matching method of the
:class:`~tenant_schema.dialects.Dialect`. A plugin therefore either ships a
``Dialect`` subclass (a new dialect) or implements a hook for a dialect it
recognises by ``dialect.name`` and returns ``None`` for all others (extending
an existing one).

Every docstring says whether the hook is ``firstresult`` (pluggy stops at the
first implementation returning something other than ``None``, so ``None``
means "not mine, ask the next one") or collects a result from every
implementation (``None`` then contributes nothing), and gives a ``:param:``
line per argument. The specs are grouped by phase: dialects, servers and
databases; DDL (tables and indexes); field mapping; per-tenant roles.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:  # pragma: no cover - typing only
    from django.db.backends.base.base import BaseDatabaseWrapper
    from django.db.backends.base.schema import BaseDatabaseSchemaEditor
    from django.db.backends.ddl_references import Statement
    from django.db.models import Field, Model

    from .dialects import Dialect, IndexSpec
    from .servers import Server

PROJECT_NAME = "tenant_schema"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


# -- dialects, servers and databases --------------------------------------------
# Called while the plugin manager is built (register_dialects), when a server
# URL is parsed, and when a tenant's database is created, cloned or dropped.
# ``server`` is a ``tenant_schema.servers.Server``: ``server.key``,
# ``server.settings`` (its Django connection settings), ``server.isolation``,
# ``server.connection()`` (the server's own connection, not a tenant's).


@hookspec
def tenant_schema_register_dialects(register: Callable[[type[Dialect]], None]) -> None:
    """Declare dialects by calling ``register(DialectSubclass)``.

    Not firstresult: every plugin's implementation is called, once, while the
    plugin manager is built (``tenant_schema.plugins.register_plugin`` calls
    it for a plugin registered later). The return value is ignored. The class
    carries the dialect's ``name``, its Django ``engine``, the URL
    ``schemes`` that select it in ``TENANT_SCHEMA["SERVERS"]`` and its
    capability flags. Registering a name or scheme that is already taken
    raises ``ImproperlyConfigured``, so two plugins never silently shadow
    each other.

    :param register: call it with each ``Dialect`` subclass the plugin adds.
    """


@hookspec(firstresult=True)
def tenant_schema_server_settings(dialect: Dialect, url: str) -> dict[str, Any] | None:
    """Turn a server URL into Django connection settings for the server.

    Firstresult. Return a ``DATABASES``-style dict (``ENGINE``, ``NAME``,
    ``HOST``, ...); ``None`` leaves it to the next implementation. The
    default parses the URL with ``dj-database-url`` and calls
    ``dialect.server_settings()``.

    :param dialect: the dialect the URL's scheme selects.
    :param url: the server URL from ``TENANT_SCHEMA["SERVERS"]``, secrets included.
    """


@hookspec(firstresult=True)
def tenant_schema_tenant_settings(dialect: Dialect, server: Server, database_name: str) -> dict[str, Any] | None:
    """Connection settings of one tenant's alias on ``server``.

    Firstresult; ``None`` leaves it to the next implementation. The default
    is ``dialect.tenant_settings()``: the server's settings with ``NAME`` set
    to the tenant's database (on SQLite a ``file:...?mode=rw`` URI), or the
    ``search_path`` under schema isolation.

    :param dialect: the server's dialect.
    :param server: the server the tenant lives on.
    :param database_name: the tenant's database (or schema, when the server
        isolates tenants by schema).
    """


@hookspec(firstresult=True)
def tenant_schema_database_exists(dialect: Dialect, server: Server, name: str) -> bool | None:
    """Whether the tenant database (or schema) ``name`` exists on ``server``.

    Firstresult; ``None`` leaves it to the next implementation. The default is
    ``dialect.database_exists()``.

    :param dialect: the server's dialect.
    :param server: the server to look on.
    :param name: the database (or schema) name.
    """


@hookspec(firstresult=True)
def tenant_schema_create_database(dialect: Dialect, server: Server, name: str) -> bool | None:
    """Create the tenant database (or schema) ``name`` on ``server``.

    Firstresult; ``None`` leaves it to the next implementation. Runs outside
    any transaction, in autocommit. Must be idempotent and safe against a
    concurrent creator: return ``True`` when this call created it, ``False``
    when it already existed. The default is ``dialect.create_database()``.

    :param dialect: the server's dialect.
    :param server: the server to create it on.
    :param name: the database (or schema) name, already validated.
    """


@hookspec(firstresult=True)
def tenant_schema_drop_database(dialect: Dialect, server: Server, name: str) -> bool | None:
    """Drop the tenant database (or schema) ``name``; ``True`` if it existed.

    Firstresult; ``None`` leaves it to the next implementation. The default is
    ``dialect.drop_database()``.

    :param dialect: the server's dialect.
    :param server: the server it lives on.
    :param name: the database (or schema) name.
    """


@hookspec(firstresult=True)
def tenant_schema_clone_database(dialect: Dialect, server: Server, template: str, name: str) -> bool | None:
    """Create ``name`` as a copy of the database ``template`` (fast onboarding).

    Firstresult; ``None`` leaves it to the next implementation. Return
    ``True`` when cloned, ``False`` when the dialect cannot clone (the caller
    then creates an empty database and runs the DDL). The default is
    ``dialect.clone_database()``.

    :param dialect: the server's dialect.
    :param server: the server both databases live on.
    :param template: the database to copy, which exists.
    :param name: the database to create, which does not.
    """


# -- DDL: tables and indexes ----------------------------------------------------
# Called when tables and indexes are created or dropped on a tenant's
# connection; all but can_rollback_ddl inside the schema editor doing it.
# ``model`` is the Django model class tenant-schema generated for the table
# (from the dataclass, or read from an existing table), not the dataclass:
# ``model._meta.db_table`` is the table, ``model._meta.concrete_fields`` its
# columns (each field's ``.column``, ``.get_internal_type()``, ``.null``).


@hookspec(firstresult=True)
def tenant_schema_can_rollback_ddl(dialect: Dialect, connection: BaseDatabaseWrapper) -> bool | None:
    """Whether DDL on ``connection`` is transactional.

    Firstresult; ``None`` leaves it to the next implementation. ``True`` lets
    table and index creation run in one atomic schema editor; ``False`` makes
    tenant-schema undo what a failed call created instead. The default is
    ``dialect.can_rollback_ddl and connection.features.can_rollback_ddl``.

    :param dialect: the tenant's dialect.
    :param connection: the tenant's Django connection.
    """


@hookspec
def tenant_schema_after_create_table(
    dialect: Dialect, schema_editor: BaseDatabaseSchemaEditor, model: type[Model], table_name: str
) -> Iterable[str | Statement] | None:
    """Extra DDL to run right after ``table_name`` is created.

    Not firstresult: every implementation is called and all their statements
    run, most recently registered plugin first; ``None`` (or an empty list)
    adds none. They run in the same schema editor, so they are rolled back or
    undone together with the table. Each is executed as written, with no
    parameters: a literal ``%`` needs no escaping. Quote names with
    ``schema_editor.quote_name()``. Check ``dialect.name`` to make them
    conditional on the dialect.

    :param dialect: the tenant's dialect.
    :param schema_editor: the Django schema editor the table was created with.
    :param model: the generated Django model class of the table (not the
        dataclass): ``model._meta.db_table``, ``model._meta.concrete_fields``.
    :param table_name: the table's name, ``model._meta.db_table``.
    """


@hookspec
def tenant_schema_before_drop_table(
    dialect: Dialect, schema_editor: BaseDatabaseSchemaEditor, model: type[Model], table_name: str
) -> Iterable[str | Statement] | None:
    """Extra DDL to run right before ``table_name`` is dropped.

    Not firstresult: every implementation's statements run, in the same
    schema editor as the ``DROP TABLE``; ``None`` adds none. Each is executed
    as written, with no parameters: a literal ``%`` needs no escaping.

    :param dialect: the tenant's dialect.
    :param schema_editor: the Django schema editor that drops the table.
    :param model: the generated Django model class of the table (not the dataclass).
    :param table_name: the table's name, ``model._meta.db_table``.
    """


@hookspec(firstresult=True)
def tenant_schema_index_sql(
    dialect: Dialect,
    schema_editor: BaseDatabaseSchemaEditor,
    model: type[Model],
    index: IndexSpec,
) -> Statement | str | None:
    """The ``CREATE INDEX`` statement for ``index`` on ``model``'s table.

    Firstresult; ``None`` leaves it to the next implementation. Build it with
    ``dialect.index_statement(schema_editor, model, index, template=...)`` so
    names are quoted by the backend. The default is
    ``dialect.create_index_sql()``, which adds MySQL's prefix length for TEXT
    columns and CockroachDB's ``USING HASH`` when
    ``index.options["hash_sharded"]`` is set.

    :param dialect: the tenant's dialect.
    :param schema_editor: the Django schema editor the index is created with.
    :param model: the generated Django model class of the table.
    :param index: an ``IndexSpec``: ``table``, ``columns`` (column names),
        ``unique``, ``name`` (already chosen) and ``options``.
    """


@hookspec(firstresult=True)
def tenant_schema_drop_index_sql(
    dialect: Dialect,
    schema_editor: BaseDatabaseSchemaEditor,
    model: type[Model],
    name: str,
    constraint: bool,
) -> Statement | str | None:
    """The statement dropping index ``name`` of ``model``'s table.

    Firstresult; ``None`` leaves it to the next implementation. The default is
    ``dialect.drop_index_sql()``, which a hook can call for the default
    statement.

    :param dialect: the tenant's dialect.
    :param schema_editor: the Django schema editor the index is dropped with.
    :param model: the generated Django model class of the table.
    :param name: the index's name.
    :param constraint: true when the index backs a UNIQUE constraint rather
        than being a plain index.
    """


# -- field mapping ----------------------------------------------------------------
# Called by ``register_table`` for each dataclass field, before any SQL.


@hookspec(firstresult=True)
def tenant_schema_field_for_annotation(
    dialect: Dialect, annotation: Any, name: str, metadata: dict[str, Any]
) -> Field | None:
    """Map a dataclass field's (non-``Optional``) annotation to a Django field.

    Firstresult: return an unbound ``django.db.models.Field``, or ``None`` to
    fall through to the next implementation and then to the built-in mapping.
    Nullability, defaults and the primary key are applied by the caller
    afterwards.

    The field must accept values of ``annotation``: rows are written with the
    value the row holds (an ``Enum`` member as its ``.value``), passed to
    ``field.get_db_prep_save()``, and ``where`` values to the lookups'
    ``field.get_prep_value()``; nothing converts them first. Rows read back
    hold what ``field.from_db_value()`` returns, or the driver's value when
    the field has none. So a field for a type Django does not know converts
    both ways (see "Field mapping" in ``docs/plugins.md``).

    :param dialect: the dialect of the tenant the table is registered on.
    :param annotation: the field's type, ``Optional[...]`` unwrapped.
    :param name: the dataclass field's name.
    :param metadata: the ``dataclasses.field`` metadata (``max_length``,
        ``unique``, ``db_column``, ...).
    """


# -- per-tenant roles (servers with ``?tenant_roles=true``) ---------------------
# With ``tenant_roles`` each tenant connects as its own database role, which
# owns the tenant's database (or schema) and nothing else, so a raw query on
# one tenant's connection cannot reach another's data. These hooks run on the
# server's own connection (the URL's user); ``tenant_schema.credentials`` calls
# them. The defaults call the ``Dialect`` methods of the same purpose.


@hookspec(firstresult=True)
def tenant_schema_role_name(dialect: Dialect, server: Server, database_name: str) -> str | None:
    """The name of the role a tenant connects as.

    Firstresult; ``None`` leaves it to the next implementation. Must be stable
    (it is derived again in every process, never stored), unique on the
    server, and fit the engine's user-name limit. The default is
    ``dialect.role_name()``: ``<database>_owner``, shortened with a hash when
    too long.

    :param dialect: the server's dialect.
    :param server: a server with ``tenant_roles`` on.
    :param database_name: the tenant's database (or schema, under schema isolation).
    """


@hookspec(firstresult=True)
def tenant_schema_create_role(dialect: Dialect, server: Server, role: str, password: str) -> bool | None:
    """Create the login role ``role`` with ``password``; if it exists, set its password.

    Firstresult; ``None`` leaves it to the next implementation. Idempotent and
    safe against a concurrent creator. Return ``True`` when this call created
    the role, ``False`` when it existed. Pass the password as a bound
    parameter (or, on PostgreSQL, as a verifier hashed on the client), never
    in the SQL text, and never log it.

    :param dialect: the server's dialect.
    :param server: a server with ``tenant_roles`` on.
    :param role: the role's name (from ``tenant_schema_role_name``).
    :param password: its password, derived from ``SECRET_KEY``.
    """


@hookspec(firstresult=True)
def tenant_schema_grant_role(dialect: Dialect, server: Server, role: str, database_name: str) -> bool | None:
    """Give ``role`` the tenant's database (or schema) and nothing else.

    Firstresult; ``None`` leaves it to the next implementation. The role must
    be able to create and alter tables there (all tenant DDL runs as the
    role): the default makes it the owner, and revokes the privileges the
    engine gives every role by default (PostgreSQL's ``PUBLIC`` ``CONNECT``).
    Idempotent. Return ``True`` when done.

    :param dialect: the server's dialect.
    :param server: a server with ``tenant_roles`` on.
    :param role: the tenant's role, which exists.
    :param database_name: the tenant's database (or schema), which exists.
    """


@hookspec(firstresult=True)
def tenant_schema_set_role_password(dialect: Dialect, server: Server, role: str, password: str) -> bool | None:
    """Set the password of the existing role ``role`` (after ``SECRET_KEY`` changed).

    Firstresult; ``None`` leaves it to the next implementation. Return
    ``True`` when set, ``False`` when there is no such role.

    :param dialect: the server's dialect.
    :param server: a server with ``tenant_roles`` on.
    :param role: the tenant's role.
    :param password: the password derived from the current ``SECRET_KEY``.
    """


@hookspec(firstresult=True)
def tenant_schema_drop_role(dialect: Dialect, server: Server, role: str, database_name: str) -> bool | None:
    """Drop ``role`` after the tenant's database (or schema) was dropped.

    Firstresult; ``None`` leaves it to the next implementation. Revoke what
    still refers to the role (the shared database's ``CONNECT`` under schema
    isolation), end its sessions, drop it. Idempotent: return ``True`` if the
    role existed, ``False`` if not.

    :param dialect: the server's dialect.
    :param server: a server with ``tenant_roles`` on.
    :param role: the tenant's role.
    :param database_name: the tenant's (dropped) database or schema.
    """
