"""The Dialect base class: what differs between database engines.

Read it like Django's ``features.py`` + ``schema.py``: capability flags the
core asks (never ``if vendor == ...``), and small methods a dialect overrides.
Every method here is also reachable through a hook in ``hookspecs.py``, so a
plugin can change one behaviour of an existing dialect without subclassing it.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, ClassVar

from django.core.exceptions import ImproperlyConfigured
from django.db import DatabaseError, models, transaction

from . import django_private

if TYPE_CHECKING:  # pragma: no cover
    from django.db.backends.base.schema import BaseDatabaseSchemaEditor
    from django.db.backends.ddl_references import Statement

    from .servers import Server

ISOLATION_DATABASE = "database"
ISOLATION_SCHEMA = "schema"
#: ``?pooler=`` of a server URL: no pooler, or one pooling sessions or transactions.
POOLER_NONE = ""
POOLER_SESSION = "session"
POOLER_TRANSACTION = "transaction"

#: Every tenant role name ends with this (``tenant_acme_owner``).
ROLE_SUFFIX = "_owner"
#: A role statement: SQL and its bound parameters, run on the server connection.
RoleStatement = tuple[str, tuple[Any, ...]]
#: ``max_identifier_length`` where the Django backend sets no limit (SQLite)
#: or cannot be loaded: PostgreSQL's, so names stay portable.
PORTABLE_IDENTIFIER_LENGTH = 63
#: Length of the ``VARCHAR`` a ``TEXT`` key becomes (``Dialect.key_field_for``).
KEY_TEXT_LENGTH = 255


class FromDjangoBackend:
    """A dialect flag read from the dialect's Django backend (its ``engine``), without a connection.

    Reading the flag, on the class or an instance, returns
    ``derive(engine)``. A subclass overrides the flag by assigning a plain
    value to it, as for any other flag.
    """

    def __init__(self, derive: Callable[[str], Any]) -> None:
        self.derive = derive

    def __get__(self, instance: Dialect | None, owner: type[Dialect] | None = None) -> Any:
        return self.derive((owner or type(instance)).engine)


@functools.cache
def backend_max_identifier_length(engine: str) -> int:
    """``connection.ops.max_name_length()`` of the Django backend ``engine``, else ``PORTABLE_IDENTIFIER_LENGTH``."""
    return django_private.backend_max_name_length(engine) or PORTABLE_IDENTIFIER_LENGTH


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
    #: DDL runs inside a transaction and rolls back with it: the Django
    #: backend's ``features.can_rollback_ddl`` (PostgreSQL and SQLite true,
    #: MySQL/MariaDB and CockroachDB false), read without connecting; false
    #: when the backend cannot be loaded. The live check also asks the
    #: connection (``TenantDatabase.can_rollback_ddl``).
    can_rollback_ddl: ClassVar[bool] = FromDjangoBackend(
        lambda engine: bool(django_private.backend_feature(engine, "can_rollback_ddl", False))
    )
    #: Tenants may be isolated by schema inside one database (``?isolation=schema``).
    supports_schema_isolation: ClassVar[bool] = False
    #: Schema isolation works behind a connection pooler (``?pooler=transaction``
    #: or ``session``): ``apply_transaction_search_path`` points each
    #: transaction, not the session, at the tenant's schema.
    supports_transaction_search_path: ClassVar[bool] = False
    #: The schema tenants of one server can borrow the physical connections of
    #: one per-process set (``?shared_connections=``, on by default where this
    #: is true): ``apply_shared_connections`` sets it up; each transaction sets
    #: its path as behind a pooler (needs ``supports_transaction_search_path``).
    supports_shared_connections: ClassVar[bool] = False
    #: ``clone_database`` can copy a template database.
    can_clone_databases: ClassVar[bool] = False
    #: Longest identifier (table, column, index, database name) the engine
    #: takes: the Django backend's ``connection.ops.max_name_length()``
    #: (PostgreSQL and CockroachDB 63, MySQL 64), read without connecting;
    #: ``PORTABLE_IDENTIFIER_LENGTH`` (63) where the backend has no limit
    #: (SQLite) or cannot be loaded. A subclass may assign its own.
    max_identifier_length: ClassVar[int] = FromDjangoBackend(backend_max_identifier_length)
    #: Indexes on TEXT/BLOB columns need a prefix of this many characters (MySQL).
    text_index_prefix_length: ClassVar[int | None] = None
    #: ``CREATE INDEX ... USING HASH`` (hash-sharded) is available (CockroachDB).
    supports_hash_sharded_indexes: ClassVar[bool] = False
    #: Every DDL statement needs its own transaction (CockroachDB).
    ddl_one_statement_per_transaction: ClassVar[bool] = False
    #: Each tenant can connect as its own role (``?tenant_roles=true``).
    supports_tenant_roles: ClassVar[bool] = False
    #: Longest role (user) name the engine takes, counted in UTF-8 bytes.
    max_role_name_length: ClassVar[int] = 63

    #: A whole migration plan can run in one transaction (DDL rolls back, and
    #: the schema editor works inside a transaction: not SQLite, whose editor
    #: must switch foreign-key checks off outside one).
    can_migrate_in_one_transaction: ClassVar[bool] = False
    #: Database (or schema) names the engine keeps for itself: no tenant gets one.
    reserved_database_names: ClassVar[frozenset[str]] = frozenset()
    #: Name prefixes the engine keeps for itself (``pg_`` on PostgreSQL).
    reserved_database_prefixes: ClassVar[tuple[str, ...]] = ()

    def __init__(self) -> None:
        if not self.name or not self.engine:
            raise ImproperlyConfigured(f"{type(self).__name__} must set name and engine")

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"

    # -- servers and databases -------------------------------------------
    def reserves_database_name(self, server: Server, name: str) -> bool:
        """Whether ``name`` is a system database (or schema), or the server's own.

        Checked before any tenant database is named, so a slug can never
        reach ``mysql``, ``postgres`` or the database a server URL names.
        """
        folded = name.lower()
        own = str(server.settings.get("NAME") or "").lower()
        return (
            folded in self.reserved_database_names
            or folded.startswith(self.reserved_database_prefixes)
            or (bool(own) and folded == own)
        )

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
        if server.isolation != ISOLATION_SCHEMA:
            settings["NAME"] = database_name
        elif server.pooler or server.shared_connections:
            # PgBouncer refuses a start-up search_path in any pool mode; a
            # shared connection serves another tenant after this one.
            self.apply_transaction_search_path(settings, database_name)
            if server.shared_connections:
                self.apply_shared_connections(settings, server, database_name)
        else:
            self.apply_search_path(settings, database_name)
        return settings

    def apply_search_path(self, settings: dict[str, Any], schema: str) -> None:
        """Point a connection at ``schema`` (schema isolation only)."""
        raise ImproperlyConfigured(f"the {self.name} dialect cannot isolate tenants by schema")

    def apply_transaction_search_path(self, settings: dict[str, Any], schema: str) -> None:
        """Point every transaction of a connection at ``schema`` (schema isolation behind a pooler).

        A transaction pooler hands the server connection to another client
        after each transaction, so nothing set once per session (a startup
        parameter, a session-level ``SET``) may decide which schema a
        statement reaches: each transaction must set it, before its first
        statement, for itself only. (Poolers in session mode get the same,
        as PgBouncer refuses the start-up parameter in every mode.)
        """
        raise ImproperlyConfigured(
            f"the {self.name} dialect cannot set a tenant's schema in each transaction (behind a pooler)"
        )

    def apply_shared_connections(self, settings: dict[str, Any], server: Server, schema: str) -> None:
        """Make a schema tenant's connections borrowed from ``server``'s shared ones (``?shared_connections``).

        Called after ``apply_transaction_search_path`` (the path is set in
        each transaction, so any tenant of the server may use a connection
        next). The dialect puts its ``tenant_schema.aliases.SharedConnections``
        (one per server and process) in ``settings`` under
        ``SHARED_CONNECTIONS_SETTING``.
        """
        raise ImproperlyConfigured(f"the {self.name} dialect cannot share connections between schema tenants")

    def database_exists(self, server: Server, name: str) -> bool:
        """Whether the tenant database (or schema) ``name`` exists. A new dialect must override it."""
        raise NotImplementedError(f"{type(self).__name__} must implement database_exists(server, name)")

    def create_database(self, server: Server, name: str) -> bool:
        """Create ``name``; ``True`` if this call created it, ``False`` if it existed. Must be overridden."""
        raise NotImplementedError(f"{type(self).__name__} must implement create_database(server, name)")

    def drop_database(self, server: Server, name: str) -> bool:
        """Drop ``name``; ``True`` if it existed. A new dialect must override it."""
        raise NotImplementedError(f"{type(self).__name__} must implement drop_database(server, name)")

    def clone_database(self, server: Server, template: str, name: str) -> bool:
        """Copy ``template`` to ``name``; ``False`` where the dialect cannot, or ``name`` exists."""
        return False

    def rename_database(self, server: Server, old: str, new: str) -> bool:
        """Rename the database ``old`` to ``new`` in one step; ``False`` when ``new`` exists.

        Only called where ``can_clone_databases`` is true: a clone template is
        built under a temporary name and renamed into place once complete, so
        no clone is ever taken from a half-built template.
        """
        raise NotImplementedError(f"{type(self).__name__} must implement rename_database(server, old, new)")

    def read_snapshot(self, connection: Any) -> AbstractContextManager[None]:
        """A block in which every read through ``connection`` sees the database as of one moment.

        ``tenant_export`` reads all of a tenant's tables in one such block,
        while the tenant is served. The default is one transaction
        (``transaction.atomic``): SQLite's read transaction is a snapshot. A
        dialect whose transactions see what others commit meanwhile (READ
        COMMITTED, PostgreSQL's and MySQL's default) raises the isolation
        level for the block. ``connection`` is a Django connection with no
        transaction open.
        """
        return transaction.atomic(using=connection.alias)

    # -- moving a tenant (``tenant_move``) ---------------------------------
    # ``connection`` is the tenant's Django connection, no transaction open;
    # ``table`` and ``tables`` are table names in the tenant's database.

    def wait_for_writers(self, connection: Any, tables: list[str], timeout: float) -> bool:
        """Return once every transaction that wrote to one of ``tables`` before this call has ended.

        ``tenant_move`` calls it on the source once the tenant's writes are
        paused and before copying, so a transaction that wrote before the
        pause and commits later is in the copy instead of left behind on the
        source. Reads go on meanwhile. It raises ``TimeoutError`` when such
        a transaction is still open after about ``timeout`` seconds (other
        failures as Django's ``DatabaseError``).
        ``False`` (the default) where the dialect cannot wait: the move then
        relies on its verification, which reads the source again.
        """
        return False

    def next_key(self, connection: Any, table: str, column: str) -> int | None:
        """The value ``table``'s generated key ``column`` takes next: its sequence or auto-increment counter.

        ``None`` (the default) where the column has no counter or the dialect
        cannot read it. A move carries the counter over, so keys of rows
        deleted from the end of a table are not handed out again.
        """
        return None

    def set_next_key(self, connection: Any, table: str, column: str, value: int) -> bool:
        """Make ``value`` the next key ``column`` generates; ``False`` (the default) where it has no counter to set.

        Only called with a ``value`` above what ``next_key()`` returns.
        """
        return False

    # -- per-tenant roles (``?tenant_roles=true``) -------------------------
    # The ``*_sql`` methods build statements (names quoted by the server
    # connection's backend, values as bound parameters); the others run them
    # on the server's own connection, as the server URL's user.

    def role_name(self, server: Server, database_name: str) -> str:
        """The role of the tenant whose database (or schema) is ``database_name``.

        ``<database>_owner``; under schema isolation ``<shared database>.<schema>_owner``
        (roles are server-wide, and a ``.`` never occurs in a database name, so
        the two forms never meet). A name over ``max_role_name_length`` bytes
        keeps its start and ends with a hash of the whole name: stable, and
        still unique.
        """
        base = database_name
        if server.isolation == ISOLATION_SCHEMA:
            base = f"{_role_part(server.settings.get('NAME') or '')}.{database_name}"
        return shorten_role_name(f"{base}{ROLE_SUFFIX}", self.max_role_name_length)

    def _no_roles(self) -> ImproperlyConfigured:
        return ImproperlyConfigured(f"the {self.name} dialect cannot give tenants their own roles (tenant_roles)")

    def role_exists(self, server: Server, role: str) -> bool:
        """Whether the role ``role`` exists on ``server``."""
        raise self._no_roles()

    def create_role_sql(self, server: Server, role: str, password: str) -> list[RoleStatement]:
        """Create the login role ``role`` with ``password`` (it does not exist yet)."""
        raise self._no_roles()

    def set_role_password_sql(self, server: Server, role: str, password: str) -> list[RoleStatement]:
        """Give the existing role ``role`` the password ``password``."""
        raise self._no_roles()

    def grant_role_sql(self, server: Server, role: str, database_name: str) -> list[RoleStatement]:
        """Make ``role`` the owner of the tenant's database (or schema), and nothing else."""
        raise self._no_roles()

    def drop_role_sql(self, server: Server, role: str, database_name: str) -> list[RoleStatement]:
        """Drop ``role`` (and what still refers to it) once the tenant's database is gone."""
        raise self._no_roles()

    def execute_role_sql(self, server: Server, statements: list[RoleStatement]) -> None:
        """Run role statements on the server connection.

        They go straight to the driver's cursor, so Django's SQL debug log
        (``DEBUG=True``, ``connection.queries``) never records a password;
        errors are still Django's ``DatabaseError`` classes.
        """
        connection = server.connection()
        with connection.cursor() as cursor:
            raw = getattr(cursor, "cursor", cursor)
            with connection.wrap_database_errors:
                for sql, params in statements:
                    raw.execute(sql, params or None)

    def create_role(self, server: Server, role: str, password: str) -> bool:
        """Create ``role`` if missing, else set its password; ``True`` if this call created it.

        A concurrent creator is not an error: the role then exists and gets
        its password set.
        """
        if not self.role_exists(server, role):
            try:
                self.execute_role_sql(server, self.create_role_sql(server, role, password))
                return True
            except DatabaseError:
                if not self.role_exists(server, role):
                    raise
        self.execute_role_sql(server, self.set_role_password_sql(server, role, password))
        return False

    def set_role_password(self, server: Server, role: str, password: str) -> bool:
        """Set the password of ``role``; ``False`` when there is no such role."""
        if not self.role_exists(server, role):
            return False
        self.execute_role_sql(server, self.set_role_password_sql(server, role, password))
        return True

    def grant_role(self, server: Server, role: str, database_name: str) -> None:
        """Run ``grant_role_sql()`` on the server connection."""
        self.execute_role_sql(server, self.grant_role_sql(server, role, database_name))

    def drop_role(self, server: Server, role: str, database_name: str) -> bool:
        """Drop ``role``; ``True`` if it existed."""
        if not self.role_exists(server, role):
            return False
        self.execute_role_sql(server, self.drop_role_sql(server, role, database_name))
        return True

    # -- DDL ---------------------------------------------------------------
    def index_statement(
        self,
        schema_editor: BaseDatabaseSchemaEditor,
        model: type[models.Model],
        index: IndexSpec,
        *,
        template: str | None = None,
    ) -> Statement:
        """A ``CREATE INDEX`` ``Statement`` for ``index``, built and quoted by ``schema_editor``.

        The public way for a dialect or a ``tenant_schema_index_sql`` hook to
        build an index statement: neither needs the schema editor's private
        API (``tenant_schema.django_private`` wraps it). ``template`` is the
        SQL with ``%(name)s``, ``%(table)s``, ``%(columns)s``, ``%(using)s``,
        ``%(include)s``, ``%(nulls_distinct)s``, ``%(extra)s`` and
        ``%(condition)s`` placeholders, which the editor fills in, quoted; by
        default the editor's ``sql_create_unique_index`` for a unique index,
        else its ``sql_create_index``. Each column gets
        ``index_column_suffix()`` (MySQL's prefix length on TEXT columns).
        """
        fields = [model._meta.get_field(column_field(model, c)) for c in index.columns]
        col_suffixes = tuple(self.index_column_suffix(schema_editor, f) for f in fields)
        if template is None and index.unique:
            template = schema_editor.sql_create_unique_index
        statement = django_private.create_index_statement(
            schema_editor, model, fields=fields, name=index.name, sql_template=template, col_suffixes=col_suffixes
        )
        statement.parts.setdefault("nulls_distinct", "")  # part of the UNIQUE template only
        return statement

    def create_index_sql(
        self, schema_editor: BaseDatabaseSchemaEditor, model: type[models.Model], index: IndexSpec
    ) -> Statement:
        """``CREATE [UNIQUE] INDEX`` for ``index``: ``index_statement()`` with the editor's own template."""
        return self.index_statement(schema_editor, model, index)

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
        """The statement dropping index ``name`` of ``model``'s table, quoted by ``schema_editor``.

        ``constraint`` is true when the index backs a UNIQUE constraint. A
        hook that wants the default statement calls this
        (``dialect.drop_index_sql(...)``), not the schema editor's private API.
        """
        return django_private.drop_index_statement(schema_editor, model, name, unique_constraint=constraint)

    def key_field_for(self, field: models.Field) -> models.Field:
        """The field a primary-key or unique column gets, ``field`` being the one its annotation maps to.

        A ``TextField`` becomes ``CharField(max_length=KEY_TEXT_LENGTH)``
        (``VARCHAR(255)``) on every built-in dialect: MySQL cannot key a
        ``TEXT`` column without a prefix (Django's
        ``connection.features.supports_index_on_text_field`` is false
        there), and elsewhere a dataclass keeps one table shape on every
        engine. Other fields are returned as they are. A dialect whose
        engine keys ``TEXT`` and that wants it to may return ``field``.
        """
        if isinstance(field, models.TextField):
            return models.CharField(max_length=KEY_TEXT_LENGTH)
        return field

    def field_for_annotation(self, annotation: Any, name: str, metadata: dict[str, Any]) -> models.Field | None:
        """Dialect-specific override of the annotation -> field mapping; ``None`` keeps the built-in one.

        The field must accept values of ``annotation``: see the
        ``tenant_schema_field_for_annotation`` hook for what it receives.
        """
        return None


def shorten_role_name(name: str, limit: int) -> str:
    """``name`` if it fits in ``limit`` UTF-8 bytes, else its start, a hash of it and ``ROLE_SUFFIX``."""
    encoded = name.encode()
    if len(encoded) <= limit:
        return name
    tail = f"_{hashlib.sha256(encoded).hexdigest()[:12]}{ROLE_SUFFIX}"
    return encoded[: limit - len(tail)].decode("utf-8", "ignore") + tail


def _role_part(name: str) -> str:
    """A shared database's name as part of a role name: itself if a plain identifier, else a hash."""
    from .names import IDENTIFIER_RE

    if IDENTIFIER_RE.fullmatch(name):
        return name
    return "db" + hashlib.sha256(name.encode()).hexdigest()[:12]


def column_field(model: type[models.Model], column: str) -> str:
    """The model field name whose database column is ``column``."""
    for field in model._meta.concrete_fields:
        if field.column == column:
            return field.name
    valid = ", ".join(sorted(f.column for f in model._meta.concrete_fields))
    raise ValueError(f"table {model._meta.db_table!r} has no column {column!r}; columns are: {valid}")
