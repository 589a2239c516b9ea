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


@hookspec
def tenant_schema_register_dialects(register: Callable[[type[Dialect]], None]) -> None:
    """Declare dialects by calling ``register(DialectSubclass)``.

    The class carries the dialect's ``name``, its Django ``engine``, the URL
    ``schemes`` that select it in ``TENANT_SCHEMA["SERVERS"]`` and its
    capability flags. Registering a name that is already taken raises
    ``ImproperlyConfigured``, so two plugins never silently shadow each other.
    """


@hookspec(firstresult=True)
def tenant_schema_server_settings(dialect: Dialect, url: str) -> dict[str, Any] | None:
    """Turn a server URL into Django connection settings for the server.

    Return a ``DATABASES``-style dict (``ENGINE``, ``NAME``, ``HOST``, ...) or
    ``None`` to leave it to the next implementation. The default parses the
    URL with ``dj-database-url`` and calls ``dialect.server_settings()``.
    """


@hookspec(firstresult=True)
def tenant_schema_tenant_settings(
    dialect: Dialect, server: Server, database_name: str
) -> dict[str, Any] | None:
    """Connection settings of one tenant's alias on ``server``.

    ``database_name`` is the tenant's database (or schema, when the server
    isolates tenants by schema). The default is ``dialect.tenant_settings()``.
    """


@hookspec(firstresult=True)
def tenant_schema_database_exists(dialect: Dialect, server: Server, name: str) -> bool | None:
    """Whether the tenant database (or schema) ``name`` exists on ``server``."""


@hookspec(firstresult=True)
def tenant_schema_create_database(dialect: Dialect, server: Server, name: str) -> bool | None:
    """Create the tenant database (or schema) ``name`` on ``server``.

    Runs outside any transaction, in autocommit. Must be idempotent and safe
    against a concurrent creator: return ``True`` when this call created it,
    ``False`` when it already existed.
    """


@hookspec(firstresult=True)
def tenant_schema_drop_database(dialect: Dialect, server: Server, name: str) -> bool | None:
    """Drop the tenant database (or schema) ``name``; ``True`` if it existed."""


@hookspec(firstresult=True)
def tenant_schema_clone_database(
    dialect: Dialect, server: Server, template: str, name: str
) -> bool | None:
    """Create ``name`` as a copy of the database ``template`` (fast onboarding).

    Return ``True`` when cloned, ``False`` when the dialect cannot clone (the
    caller then creates an empty database and runs the DDL).
    """


@hookspec(firstresult=True)
def tenant_schema_can_rollback_ddl(
    dialect: Dialect, connection: BaseDatabaseWrapper
) -> bool | None:
    """Whether DDL on ``connection`` is transactional.

    ``True`` lets table and index creation run in one atomic schema editor;
    ``False`` makes tenant-schema undo what a failed call created instead.
    """


@hookspec(firstresult=True)
def tenant_schema_index_sql(
    dialect: Dialect,
    schema_editor: BaseDatabaseSchemaEditor,
    model: type[Model],
    index: IndexSpec,
) -> Statement | str | None:
    """The ``CREATE INDEX`` statement for ``index`` on ``model``'s table.

    Build it with the schema editor (``_create_index_sql``) so names are
    quoted by the backend. The default is ``dialect.create_index_sql()``, which
    adds MySQL's prefix length for TEXT columns and CockroachDB's
    ``USING HASH`` when ``index.options["hash_sharded"]`` is set.
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

    ``constraint`` is true when the index backs a UNIQUE constraint rather
    than being a plain index. The default is ``dialect.drop_index_sql()``.
    """


@hookspec(firstresult=True)
def tenant_schema_field_for_annotation(
    dialect: Dialect, annotation: Any, name: str, metadata: dict[str, Any]
) -> Field | None:
    """Map a dataclass field's (non-``Optional``) annotation to a Django field.

    Return an unbound ``django.db.models.Field`` or ``None`` to fall through
    to the default mapping. ``metadata`` is the ``dataclasses.field``
    metadata (``max_length``, ``unique``, ``db_column``, ...); nullability,
    defaults and the primary key are applied by the caller afterwards.
    """


@hookspec
def tenant_schema_after_create_table(
    dialect: Dialect, schema_editor: BaseDatabaseSchemaEditor, model: type[Model], table_name: str
) -> Iterable[str | Statement] | None:
    """Extra DDL to run right after ``table_name`` is created.

    Return statements (or ``None``); they run in the same schema editor, so
    they are rolled back or undone together with the table. Check
    ``dialect.name`` to make them conditional on the dialect.
    """


@hookspec
def tenant_schema_before_drop_table(
    dialect: Dialect, schema_editor: BaseDatabaseSchemaEditor, model: type[Model], table_name: str
) -> Iterable[str | Statement] | None:
    """Extra DDL to run right before ``table_name`` is dropped."""


# -- per-tenant roles (servers with ``?tenant_roles=true``) ---------------------
# With ``tenant_roles`` each tenant connects as its own database role, which
# owns the tenant's database (or schema) and nothing else, so a raw query on
# one tenant's connection cannot reach another's data. These hooks run on the
# server's own connection (the URL's user); ``tenant_schema.credentials`` calls
# them. The defaults call the ``Dialect`` methods of the same purpose.


@hookspec(firstresult=True)
def tenant_schema_role_name(dialect: Dialect, server: Server, database_name: str) -> str | None:
    """The name of the role a tenant connects as.

    Must be stable (it is derived again in every process, never stored),
    unique on the server, and fit the engine's user-name limit. The default
    is ``dialect.role_name()``: ``<database>_owner``, shortened with a hash
    when too long.

    :param dialect: the server's dialect.
    :param server: a server with ``tenant_roles`` on.
    :param database_name: the tenant's database (or schema, under schema isolation).
    """


@hookspec(firstresult=True)
def tenant_schema_create_role(dialect: Dialect, server: Server, role: str, password: str) -> bool | None:
    """Create the login role ``role`` with ``password``; if it exists, set its password.

    Idempotent and safe against a concurrent creator. Return ``True`` when
    this call created the role, ``False`` when it existed. Pass the password
    as a bound parameter (or, on PostgreSQL, as a verifier hashed on the
    client), never in the SQL text, and never log it.

    :param dialect: the server's dialect.
    :param server: a server with ``tenant_roles`` on.
    :param role: the role's name (from ``tenant_schema_role_name``).
    :param password: its password, derived from ``SECRET_KEY``.
    """


@hookspec(firstresult=True)
def tenant_schema_grant_role(dialect: Dialect, server: Server, role: str, database_name: str) -> bool | None:
    """Give ``role`` the tenant's database (or schema) and nothing else.

    The role must be able to create and alter tables there (all tenant DDL
    runs as the role): the default makes it the owner, and revokes the
    privileges the engine gives every role by default (PostgreSQL's
    ``PUBLIC`` ``CONNECT``). Idempotent. Return ``True`` when done.

    :param dialect: the server's dialect.
    :param server: a server with ``tenant_roles`` on.
    :param role: the tenant's role, which exists.
    :param database_name: the tenant's database (or schema), which exists.
    """


@hookspec(firstresult=True)
def tenant_schema_set_role_password(dialect: Dialect, server: Server, role: str, password: str) -> bool | None:
    """Set the password of the existing role ``role`` (after ``SECRET_KEY`` changed).

    Return ``True`` when set, ``False`` when there is no such role.

    :param dialect: the server's dialect.
    :param server: a server with ``tenant_roles`` on.
    :param role: the tenant's role.
    :param password: the password derived from the current ``SECRET_KEY``.
    """


@hookspec(firstresult=True)
def tenant_schema_drop_role(dialect: Dialect, server: Server, role: str, database_name: str) -> bool | None:
    """Drop ``role`` after the tenant's database (or schema) was dropped.

    Revoke what still refers to the role (the shared database's ``CONNECT``
    under schema isolation), end its sessions, drop it. Idempotent: return
    ``True`` if the role existed, ``False`` if not.

    :param dialect: the server's dialect.
    :param server: a server with ``tenant_roles`` on.
    :param role: the tenant's role.
    :param database_name: the tenant's (dropped) database or schema.
    """
