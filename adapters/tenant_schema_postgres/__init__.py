"""PostgreSQL dialect plugin for tenant-schema.

Databases are created on a separate server-level connection (to the
``postgres`` maintenance database, or the URL's database), in autocommit,
because ``CREATE DATABASE`` cannot run in a transaction block and has no
``IF NOT EXISTS``: existence is checked in ``pg_database`` and a concurrent
creator's ``DuplicateDatabase`` is treated as "already there".

Schema isolation points a tenant's connection at its schema with the
``search_path`` startup parameter, once per connection. Behind a transaction
pooler (``?pooler=transaction``, PgBouncer) a connection's session is shared
by every client of the pool, so the path is set inside each transaction
instead: see ``search_path_cursor``.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import os
import threading
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.db import DatabaseError, transaction
from django.db.backends.signals import connection_created

from tenant_schema import hookimpl
from tenant_schema.dialects import ISOLATION_SCHEMA, POOLER_TRANSACTION, Dialect
from tenant_schema.exceptions import TenantSchemaError
from tenant_schema.names import validate_identifier


class PostgresDialect(Dialect):
    name = "postgres"
    engine = "django.db.backends.postgresql"
    schemes = ("postgres", "postgresql", "pgsql")

    can_rollback_ddl = True
    can_migrate_in_one_transaction = True
    supports_schema_isolation = True
    can_clone_databases = True
    max_identifier_length = 63
    reserved_database_names = frozenset({"postgres", "template0", "template1", "public", "information_schema"})
    reserved_database_prefixes = ("pg_",)

    #: Server-level catalog queries: values are bound parameters.
    exists_database_sql = "SELECT 1 FROM pg_catalog.pg_database WHERE datname = %s"
    exists_schema_sql = "SELECT 1 FROM information_schema.schemata WHERE schema_name = %s"
    #: SQLSTATEs meaning "someone else created it first".
    duplicate_sqlstates = frozenset({"42P04", "42P06", "23505"})

    def server_settings(self, parsed: dict[str, Any]) -> dict[str, Any]:
        parsed["NAME"] = parsed.get("NAME") or "postgres"
        return parsed

    def apply_search_path(self, settings: dict[str, Any], schema: str) -> None:
        # A startup parameter, set once per physical connection (a transaction
        # pooler refuses it, or drops it: see apply_transaction_search_path).
        # libpq splits ``options`` on whitespace and takes backslash escapes,
        # so only a plain identifier may go in (checked again here, whoever
        # the caller is).
        validate_identifier(schema, "tenant schema name", self.max_identifier_length)
        settings["OPTIONS"]["options"] = f"-c search_path={schema}"

    supports_transaction_search_path = True

    def apply_transaction_search_path(self, settings: dict[str, Any], schema: str) -> None:
        # Every statement that starts a transaction carries
        # ``set_config('search_path', schema, true)`` in the same message
        # (search_path_cursor): the setting lasts until that transaction ends,
        # on whichever server connection the pooler picked for it.
        validate_identifier(schema, "tenant schema name", self.max_identifier_length)
        options = settings["OPTIONS"]
        for option in ("server_side_binding", "cursor_factory", "options"):
            if options.get(option):
                raise ImproperlyConfigured(
                    f"the server URL's {option!r} option cannot be combined with isolation=schema behind "
                    "a pooler: tenant connections bind parameters client-side, with their own cursor "
                    "class, so that each transaction sets its search path in its first statement"
                )
        options["cursor_factory"] = search_path_cursor(schema)
        settings["DISABLE_SERVER_SIDE_CURSORS"] = True

    def _is_schema(self, server) -> bool:
        return server.isolation == ISOLATION_SCHEMA

    def database_exists(self, server, name: str) -> bool:
        sql = self.exists_schema_sql if self._is_schema(server) else self.exists_database_sql
        with server.connection().cursor() as cursor:
            cursor.execute(sql, [name])
            return cursor.fetchone() is not None

    def create_database_sql(self, server, quoted: str) -> str:
        if self._is_schema(server):
            return f"CREATE SCHEMA {quoted}"
        return f"CREATE DATABASE {quoted}"

    def create_database(self, server, name: str) -> bool:
        if self.database_exists(server, name):
            return False
        connection = server.connection()
        try:
            with connection.cursor() as cursor:
                cursor.execute(self.create_database_sql(server, connection.ops.quote_name(name)))
        except DatabaseError as exc:
            if getattr(exc.__cause__, "sqlstate", None) in self.duplicate_sqlstates:
                return False
            raise
        return True

    def drop_database_sql(self, server, quoted: str) -> str:
        if self._is_schema(server):
            return f"DROP SCHEMA IF EXISTS {quoted} CASCADE"
        return f"DROP DATABASE IF EXISTS {quoted} WITH (FORCE)"

    #: Sessions holding locks on a schema's tables (schema isolation shares one
    #: database, so sessions are found by lock, never ended by database).
    schema_lock_holders_sql = (
        "SELECT DISTINCT l.pid FROM pg_catalog.pg_locks l "
        "JOIN pg_catalog.pg_class c ON c.oid = l.relation "
        "JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = %s AND l.pid <> pg_backend_pid()"
    )
    #: How long a schema drop waits for a lock after ending the holders.
    drop_lock_timeout = "10s"

    def drop_database(self, server, name: str) -> bool:
        existed = self.database_exists(server, name)
        connection = server.connection()
        with connection.cursor() as cursor:
            if self._is_schema(server):
                # DROP DATABASE ... WITH (FORCE) ends the database's sessions;
                # a schema drop would wait for ever on one idle in a transaction.
                cursor.execute(self.schema_lock_holders_sql, [name])
                for (pid,) in cursor.fetchall():
                    cursor.execute("SELECT pg_terminate_backend(%s, 5000)", [pid])
                drop = self.drop_database_sql(server, connection.ops.quote_name(name))
                if server.pooler == POOLER_TRANSACTION:
                    # One transaction: a session-level SET would stay behind on
                    # a pooled server connection, and the DROP could run on another.
                    with transaction.atomic(using=connection.alias):
                        cursor.execute(f"SET LOCAL lock_timeout = '{self.drop_lock_timeout}'")
                        cursor.execute(drop)
                    return existed
                cursor.execute(f"SET lock_timeout = '{self.drop_lock_timeout}'")
                try:
                    cursor.execute(drop)
                finally:
                    cursor.execute("RESET lock_timeout")
            else:
                cursor.execute(self.drop_database_sql(server, connection.ops.quote_name(name)))
        return existed

    def clone_database(self, server, template: str, name: str) -> bool:
        if self._is_schema(server):
            return False
        connection = server.connection()
        quote = connection.ops.quote_name
        self.end_pooled_sessions(server, template)
        try:
            with connection.cursor() as cursor:
                cursor.execute(self.clone_database_sql(quote(template), quote(name)))
        except DatabaseError as exc:
            if getattr(exc.__cause__, "sqlstate", None) in self.duplicate_sqlstates:
                return False
            raise
        return True

    #: Idle sessions on a database, other than our own: behind a pooler, the
    #: server connections it keeps to the database between transactions.
    idle_sessions_sql = (
        "SELECT pg_catalog.pg_terminate_backend(pid, 5000) FROM pg_catalog.pg_stat_activity "
        "WHERE datname = %s AND state = 'idle' AND pid <> pg_catalog.pg_backend_pid()"
    )

    def end_pooled_sessions(self, server, name: str) -> None:
        """Behind a pooler, end its idle server connections to ``name`` (copying or renaming a
        database needs it to have no session; the pooler opens new ones when needed)."""
        if server.pooler:
            with server.connection().cursor() as cursor:
                cursor.execute(self.idle_sessions_sql, [name])

    def clone_database_sql(self, quoted_template: str, quoted_name: str) -> str:
        # WAL_LOG (PostgreSQL 15's default) measured 49 ms against FILE_COPY's
        # 95 ms for a five-table template on the development machine: no
        # checkpoint, and the template is small (docs/operations.md).
        return f"CREATE DATABASE {quoted_name} TEMPLATE {quoted_template} STRATEGY WAL_LOG"

    def rename_database(self, server, old: str, new: str) -> bool:
        if self._is_schema(server):
            return False
        connection = server.connection()
        quote = connection.ops.quote_name
        self.end_pooled_sessions(server, old)
        try:
            with connection.cursor() as cursor:
                cursor.execute(f"ALTER DATABASE {quote(old)} RENAME TO {quote(new)}")
        except DatabaseError as exc:
            if getattr(exc.__cause__, "sqlstate", None) in self.duplicate_sqlstates:
                return False
            raise
        return True

    # -- per-tenant roles (tenant_roles=true) ------------------------------
    supports_tenant_roles = True
    max_role_name_length = 63  # NAMEDATALEN - 1, in bytes
    #: Attributes every tenant role gets, on creation and again at each re-key.
    role_options = "LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS"

    def role_exists(self, server, role: str) -> bool:
        with server.connection().cursor() as cursor:
            cursor.execute("SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = %s", [role])
            return cursor.fetchone() is not None

    def role_password(self, role: str, password: str) -> str:
        """What goes in ``PASSWORD``: a SCRAM-SHA-256 verifier hashed here, so the
        password itself never reaches the server (nor its statement log)."""
        return scram_sha256_verifier(password)

    def create_role_sql(self, server, role, password):
        quote = server.connection().ops.quote_name
        return [
            (f"CREATE ROLE {quote(role)} WITH {self.role_options} PASSWORD %s", (self.role_password(role, password),))
        ]

    def set_role_password_sql(self, server, role, password):
        quote = server.connection().ops.quote_name
        return [
            (f"ALTER ROLE {quote(role)} WITH {self.role_options} PASSWORD %s", (self.role_password(role, password),))
        ]

    def grant_role_sql(self, server, role, database_name):
        quote = server.connection().ops.quote_name
        if self._is_schema(server):
            shared = quote(server.settings["NAME"])
            return [
                (f"REVOKE ALL ON DATABASE {shared} FROM PUBLIC", ()),
                (f"GRANT CONNECT ON DATABASE {shared} TO {quote(role)}", ()),
                (f"ALTER SCHEMA {quote(database_name)} OWNER TO {quote(role)}", ()),
            ]
        return [
            (f"REVOKE ALL ON DATABASE {quote(database_name)} FROM PUBLIC", ()),
            (f"ALTER DATABASE {quote(database_name)} OWNER TO {quote(role)}", ()),
        ]

    def drop_role_sql(self, server, role, database_name):
        quote = server.connection().ops.quote_name
        statements = [self.end_role_sessions_sql(role)]
        if self._is_schema(server):
            statements.append((f"REVOKE ALL ON DATABASE {quote(server.settings['NAME'])} FROM {quote(role)}", ()))
        statements.append((f"DROP ROLE IF EXISTS {quote(role)}", ()))
        return [s for s in statements if s is not None]

    #: Key of the advisory lock role changes take: concurrent GRANTs on one
    #: database (schema isolation's shared one) fail with "tuple concurrently
    #: updated" otherwise.
    role_lock_key = 0x74656E616E74  # "tenant"

    def _serialized(self, server, statements) -> None:
        """Run ``statements`` in one transaction, after every other tenant-schema role change."""
        if self.ddl_one_statement_per_transaction:  # CockroachDB: one change per transaction, no advisory locks
            self.execute_role_sql(server, statements)
            return
        with transaction.atomic(using=server.connection().alias):
            lock = ("SELECT pg_catalog.pg_advisory_xact_lock(%s)", (self.role_lock_key,))
            self.execute_role_sql(server, [lock, *statements])

    def grant_role(self, server, role, database_name):
        self._serialized(server, self.grant_role_sql(server, role, database_name))

    def drop_role(self, server, role, database_name):
        if not self.role_exists(server, role):
            return False
        self._serialized(server, self.drop_role_sql(server, role, database_name))
        return True

    def end_role_sessions_sql(self, role: str):
        return (
            "SELECT pg_catalog.pg_terminate_backend(pid) FROM pg_catalog.pg_stat_activity "
            "WHERE usename = %s AND pid <> pg_catalog.pg_backend_pid()",
            (role,),
        )

    def create_role(self, server, role, password):
        with server.connection().cursor() as cursor:
            cursor.execute("SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = %s", [role])
            row = cursor.fetchone()
        if row is not None and row[0]:
            raise TenantSchemaError(
                f"role {role!r} exists on server {server.key!r} and is a superuser: refusing to make it a tenant's role"
            )
        return super().create_role(server, role, password)


def scram_sha256_verifier(password: str, *, salt: bytes | None = None, iterations: int = 4096) -> str:
    """PostgreSQL's stored form of ``password`` (RFC 5802/7677, as ``\\password`` in psql computes it).

    PostgreSQL takes a verifier in ``PASSWORD '...'`` as is. Its characters
    are base64 and ``$:-``, nothing that needs quoting.
    """
    salt = os.urandom(16) if salt is None else salt
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", "sha256").digest()
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.new(salted, b"Server Key", "sha256").digest()
    b64 = lambda raw: base64.b64encode(raw).decode("ascii")  # noqa: E731
    return f"SCRAM-SHA-256${iterations}:{b64(salt)}${b64(stored_key)}:{b64(server_key)}"


# -- the search path in each transaction (isolation=schema behind a pooler) ----------------

#: psycopg's ``TransactionStatus.IDLE``: no transaction open on the connection.
_IDLE = 0
_cursor_classes: dict[str, type] = {}
_cursor_lock = threading.Lock()


def search_path_cursor(schema: str) -> type:
    """The psycopg cursor class of connections whose every transaction runs in ``schema``.

    A statement that starts a transaction (the connection has none open:
    Django's autocommit, or the first statement of an atomic block, after
    the ``BEGIN`` psycopg sends) is sent as
    ``SELECT pg_catalog.set_config('search_path', '"schema"', true); <statement>``
    in one message: PostgreSQL runs both in one transaction, so the path
    holds for the statement and for the rest of its transaction, and goes
    with it, whichever server connection the pooler lent. Statements
    inside an open transaction are sent as they are. ``executemany`` (sent
    in pipeline mode, one statement per message) sets the path in a
    transaction of its own first: ``BEGIN; set_config(...)``, the statements,
    ``COMMIT``.

    The class derives from Django's own cursor (client-side binding), is
    passed to psycopg as ``cursor_factory`` (so every cursor of the
    connection, Django's and raw ones, is one) and is made once per schema.
    """
    cls = _cursor_classes.get(schema)
    if cls is None:
        validate_identifier(schema, "tenant schema name", PostgresDialect.max_identifier_length)
        with _cursor_lock:
            cls = _cursor_classes.get(schema)
            if cls is None:
                cls = _cursor_classes[schema] = _make_search_path_cursor(schema)
    return cls


def _make_search_path_cursor(schema: str) -> type:
    from django.db.backends.postgresql.psycopg_any import is_psycopg3

    if not is_psycopg3:
        raise ImproperlyConfigured("isolation=schema behind a pooler needs psycopg 3 (psycopg>=3.1)")
    from django.db.backends.postgresql.base import Cursor
    from psycopg import sql

    # A double-quoted identifier inside a string literal; the name is a
    # plain identifier (checked above): no quote, no %, no backslash.
    prefix = f"SELECT pg_catalog.set_config('search_path', '\"{schema}\"', true); "

    class SearchPathCursor(Cursor):
        tenant_schema_search_path = schema
        search_path_sql = prefix

        def execute(self, query, params=None, **kwargs):
            if self.connection.info.transaction_status != _IDLE:
                return super().execute(query, params, **kwargs)
            if isinstance(query, bytes):
                query = prefix.encode() + query
            elif isinstance(query, str):
                query = prefix + query
            else:
                query = sql.Composed([sql.SQL(prefix), query])
            super().execute(query, params, **kwargs)
            self.nextset()  # the statement's own result, not set_config's
            return self

        def executemany(self, query, params_seq, **kwargs):
            connection = self.connection
            if connection.info.transaction_status != _IDLE:
                return super().executemany(query, params_seq, **kwargs)
            own = connection.autocommit  # else set_config's BEGIN (sent by psycopg) is Django's transaction
            Cursor(connection).execute(("BEGIN; " if own else "") + prefix)
            try:
                super().executemany(query, params_seq, **kwargs)
            except BaseException:
                if own:
                    with contextlib.suppress(Exception):  # the statement's error is the one to see
                        Cursor(connection).execute("ROLLBACK")
                raise
            if own:
                Cursor(connection).execute("COMMIT")
            return None

    SearchPathCursor.__qualname__ = SearchPathCursor.__name__ = f"SearchPathCursor[{schema}]"
    return SearchPathCursor


def _check_search_path_cursor(sender, connection, **kwargs) -> None:
    """Refuse a connection whose cursors do not set its tenant's schema (it would reach another's)."""
    wanted = connection.settings_dict.get("OPTIONS", {}).get("cursor_factory")
    if getattr(wanted, "tenant_schema_search_path", None) is None:
        return
    if getattr(connection.connection, "cursor_factory", None) is not wanted:
        connection.close()
        raise ImproperlyConfigured(
            f"connection {connection.alias!r} does not use the cursor that sets its schema in each "
            "transaction (isolation=schema behind a pooler): Django's PostgreSQL backend no "
            "longer passes OPTIONS['cursor_factory'] to psycopg; connect without the pooler"
        )


connection_created.connect(_check_search_path_cursor, dispatch_uid="tenant_schema_postgres.search_path_cursor")


@hookimpl
def tenant_schema_register_dialects(register):
    register(PostgresDialect)
