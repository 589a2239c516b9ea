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
instead: see ``search_path_cursor``. The same per-transaction path lets the
schema tenants of one server share a process's connections
(``?shared_connections``, on by default): see ``SharedPool``.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import os
import select
import threading
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.db import DatabaseError, transaction
from django.db.backends.signals import connection_created

from tenant_schema import django_private, hookimpl
from tenant_schema.aliases import SHARED_CONNECTIONS_SETTING, SharedConnections
from tenant_schema.dialects import ISOLATION_SCHEMA, POOLER_TRANSACTION, Dialect
from tenant_schema.exceptions import TenantSchemaError
from tenant_schema.names import validate_identifier


class PostgresDialect(Dialect):
    name = "postgres"
    engine = "django.db.backends.postgresql"
    schemes = ("postgres", "postgresql", "pgsql")

    # can_rollback_ddl: true, from the Django backend's features.
    can_migrate_in_one_transaction = True
    supports_schema_isolation = True
    can_clone_databases = True
    # max_identifier_length: 63, from Django's backend (connection.ops.max_name_length()).
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

    #: PostgreSQL's own: tested here. A dialect derived from this one (CockroachDB)
    #: does not inherit it; it opts in by setting the flag in its own class.
    supports_shared_connections = True

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "supports_shared_connections" not in vars(cls):
            cls.supports_shared_connections = False

    def apply_shared_connections(self, settings: dict[str, Any], server, schema: str) -> None:
        # Every tenant of the server borrows from one SharedPool per process.
        # A connection starts with an empty search path (nothing but
        # pg_catalog), never a tenant's: a statement that escaped the
        # per-transaction path (psycopg's copy() outside a transaction)
        # then fails instead of reaching the database's public schema.
        # PgBouncer refuses the start-up parameter, so not behind a pooler.
        settings[SHARED_CONNECTIONS_SETTING] = shared_pool(server)
        if not server.pooler:
            settings["OPTIONS"]["options"] = "-c search_path="

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

    def read_snapshot(self, connection):
        """One ``REPEATABLE READ``, ``READ ONLY`` transaction: every read sees the snapshot its first read took.

        Set on the driver's connection for the block (psycopg then opens the
        transaction with ``BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY``),
        so it holds on connections schema tenants share and behind a
        transaction pooler too, and put back afterwards.
        """
        return _repeatable_read(connection)

    #: SHARE conflicts with the ROW EXCLUSIVE lock every writing transaction holds until it ends, and
    #: with nothing a read takes.
    wait_for_writers_template = "LOCK TABLE %(tables)s IN SHARE MODE"
    #: lock_not_available (``lock_timeout``), query_canceled (``statement_timeout``).
    timeout_sqlstates = frozenset({"55P03", "57014"})
    #: The sequence behind a serial or identity column (its name quoted by PostgreSQL), ``NULL`` if none.
    key_sequence_sql = "SELECT pg_catalog.pg_get_serial_sequence(%s, %s)"
    #: A sequence's position: ``is_called`` false means ``last_value`` is handed out next.
    next_key_template = (
        "SELECT s.last_value, s.is_called, p.seqincrement FROM %(sequence)s s, pg_catalog.pg_sequence p "
        "WHERE p.seqrelid = %%s::regclass"
    )
    #: ``setval``'s third argument ``false``: the value given is the next one handed out.
    set_next_key_sql = "SELECT pg_catalog.setval(%s::regclass, %s, false)"

    def wait_for_writers(self, connection, tables, timeout):
        """``LOCK TABLE ... IN SHARE MODE`` under ``statement_timeout`` (the whole wait) and ``lock_timeout``,
        in a transaction of its own, released at once. SHARE also waits for a manual ``VACUUM`` of the tables."""
        if tables:
            quoted = ", ".join(connection.ops.quote_name(table) for table in tables)
            try:
                with transaction.atomic(using=connection.alias), connection.cursor() as cursor:
                    for setting in ("statement_timeout", "lock_timeout"):
                        cursor.execute("SELECT pg_catalog.set_config(%s, %s, true)", [setting, _milliseconds(timeout)])
                    cursor.execute(self.wait_for_writers_template % {"tables": quoted})
            except DatabaseError as exc:
                if getattr(exc.__cause__, "sqlstate", None) in self.timeout_sqlstates:
                    raise TimeoutError(f"a table lock waited {timeout:g} s: {exc}") from exc
                raise
        return True

    def key_sequence(self, connection, table: str, column: str) -> str | None:
        """The sequence generating ``column`` (serial and identity columns alike), as a quoted name."""
        with connection.cursor() as cursor:
            cursor.execute(self.key_sequence_sql, [connection.ops.quote_name(table), column])
            return cursor.fetchone()[0]

    def next_key(self, connection, table, column):
        """From the column's sequence: ``last_value``, plus its increment once handed out."""
        sequence = self.key_sequence(connection, table, column)
        if sequence is None:
            return None
        with connection.cursor() as cursor:
            # ``sequence`` is PostgreSQL's own quoted name, never the caller's text.
            cursor.execute(self.next_key_template % {"sequence": sequence}, [sequence])
            last, called, increment = cursor.fetchone()
        return last + increment if called else last

    def set_next_key(self, connection, table, column, value):
        sequence = self.key_sequence(connection, table, column)
        if sequence is None:
            return False
        with connection.cursor() as cursor:
            cursor.execute(self.set_next_key_sql, [sequence, value])
        return True

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


@contextlib.contextmanager
def _repeatable_read(connection):
    repeatable_read, read_only = django_private.postgresql_repeatable_read()
    connection.ensure_connection()
    raw = connection.connection
    before = (raw.isolation_level, getattr(raw, read_only))
    raw.isolation_level = repeatable_read
    setattr(raw, read_only, True)
    try:
        with transaction.atomic(using=connection.alias):
            yield
    finally:
        try:
            raw.isolation_level = before[0]
            setattr(raw, read_only, before[1])
        except Exception:  # noqa: BLE001 - never lend or reuse a connection left read-only
            with contextlib.suppress(Exception):
                raw.close()
            connection.close()


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
_cursor_factories: dict[str, SearchPathCursorFactory] = {}
_cursor_lock = threading.RLock()


def search_path_cursor(schema: str) -> SearchPathCursorFactory:
    """The psycopg cursor factory of connections whose every transaction runs in ``schema``.

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

    The factory is passed to psycopg as ``cursor_factory`` (so every cursor
    of the connection, Django's and raw ones, is made by it) and is made
    once per schema; its cursors are ``SearchPathCursor``s, a class derived
    from Django's own cursor (client-side binding), one for every schema.
    A cursor runs only while its factory is its connection's: one kept
    after its connection was lent to another tenant (shared connections)
    refuses to.
    """
    factory = _cursor_factories.get(schema)
    if factory is None:
        validate_identifier(schema, "tenant schema name", PostgresDialect.max_identifier_length)
        with _cursor_lock:
            factory = _cursor_factories.get(schema)
            if factory is None:
                factory = _cursor_factories[schema] = SearchPathCursorFactory(schema)
    return factory


class SearchPathCursorFactory:
    """Makes the ``SearchPathCursor``s of one schema (psycopg calls ``cursor_factory(connection, ...)``)."""

    __slots__ = ("cursor_class", "search_path_sql", "tenant_schema_search_path")

    def __init__(self, schema: str) -> None:
        self.tenant_schema_search_path = schema
        # A double-quoted identifier inside a string literal; the name is a
        # plain identifier (checked by search_path_cursor): no quote, no %,
        # no backslash.
        self.search_path_sql = f"SELECT pg_catalog.set_config('search_path', '\"{schema}\"', true); "
        self.cursor_class = _search_path_cursor_class()

    def __call__(self, connection, *args, **kwargs):
        cursor = self.cursor_class(connection, *args, **kwargs)
        cursor.search_path_factory = self
        return cursor

    def __repr__(self) -> str:
        return f"<search_path_cursor {self.tenant_schema_search_path!r}>"

    def __copy__(self) -> SearchPathCursorFactory:
        return self  # one per schema: settings dicts holding it are copied

    def __deepcopy__(self, memo: dict) -> SearchPathCursorFactory:
        return self


_cursor_class: list[type] = []


def _search_path_cursor_class() -> type:
    if _cursor_class:
        return _cursor_class[0]
    Cursor = django_private.postgresql_cursor_class()  # ImproperlyConfigured under psycopg 2
    from psycopg import sql

    class SearchPathCursor(Cursor):
        """A cursor whose every transaction-starting statement sets its schema's path (``search_path_cursor``)."""

        search_path_factory: SearchPathCursorFactory

        @property
        def tenant_schema_search_path(self) -> str:
            return self.search_path_factory.tenant_schema_search_path

        def execute(self, query, params=None, **kwargs):
            factory = self.search_path_factory
            if self.connection.cursor_factory is not factory:
                raise _lent_elsewhere(self)
            if self.connection.info.transaction_status != _IDLE:
                return super().execute(query, params, **kwargs)
            prefix = factory.search_path_sql
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
            factory = self.search_path_factory
            if connection.cursor_factory is not factory:
                raise _lent_elsewhere(self)
            if connection.info.transaction_status != _IDLE:
                return super().executemany(query, params_seq, **kwargs)
            own = connection.autocommit  # else set_config's BEGIN (sent by psycopg) is Django's transaction
            Cursor(connection).execute(("BEGIN; " if own else "") + factory.search_path_sql)
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

        def __repr__(self) -> str:
            return f"<SearchPathCursor {self.tenant_schema_search_path!r} at {id(self):#x}>"

    with _cursor_lock:
        if not _cursor_class:
            _cursor_class.append(SearchPathCursor)
    return _cursor_class[0]


def _lent_elsewhere(cursor) -> Exception:
    """A cursor kept past its wrapper's close, whose shared connection now serves another tenant (or none)."""
    from psycopg import InterfaceError

    return InterfaceError(
        f"this cursor of schema {cursor.tenant_schema_search_path!r} belongs to a connection that was given "
        "back to its server's shared connections when the tenant's connection closed (another tenant may "
        "be using it now): open a new cursor on the tenant's connection"
    )


# -- connections shared by a server's schema tenants (shared_connections) -----------------

_shared_pools: dict[tuple[str, str], SharedPool] = {}
_shared_pools_lock = threading.Lock()


def shared_pool(server) -> SharedPool:
    """The ``SharedPool`` of ``server`` in this process (one per server key and URL)."""
    key = (server.key, server.url)
    pool = _shared_pools.get(key)
    if pool is None:
        with _shared_pools_lock:
            pool = _shared_pools.get(key)
            if pool is None:
                pool = _shared_pools[key] = SharedPool(server.key)
    return pool


class SharedPool(SharedConnections):
    """psycopg connections to a schema-isolated server's database, lent to its tenants' aliases in turn.

    A connection is opened by the first tenant wrapper that needs one
    (Django's own connect, with that tenant's settings: they differ from
    any other tenant's of the server only in the cursor factory). Lending
    it to a wrapper sets the connection's ``cursor_factory`` to that
    tenant's ``search_path_cursor``, so every statement that starts a
    transaction sets the tenant's path for that transaction; giving it back
    rolls back what is open and sets a cursor factory that refuses to make
    cursors (``unlent_cursor``), so an idle connection serves no one. A
    cursor kept past its wrapper's close refuses to run (its factory is no
    longer the connection's).

    The cap (``MAX_OPEN_CONNECTIONS``) counts these connections, lent or
    idle (``tenant_schema.aliases``). What a tenant leaves in the session
    (a session-level ``SET``, temporary tables, ``LISTEN``, session advisory
    locks) stays with the connection, as behind PgBouncer in transaction
    mode: see docs/operations.md.
    """

    def lend(self, connection, wrapper, conn_params) -> None:
        connection.cursor_factory = conn_params["cursor_factory"]

    def reclaim(self, connection) -> bool:
        from psycopg.pq import ExecStatus, TransactionStatus

        connection.cursor_factory = unlent_cursor
        try:
            if connection.closed or connection.broken:
                return False
            status = connection.info.transaction_status
            if status in (TransactionStatus.INTRANS, TransactionStatus.INERROR):
                connection.rollback()  # a wrapper closed inside a transaction
            elif status != TransactionStatus.IDLE:
                return False  # a statement still running, or the connection is lost
            if not connection.autocommit:
                connection.autocommit = True
            # Temporary tables live in the session and pg_temp is searched
            # first: the next tenant must not see this one's (nor its
            # LISTENs or session advisory locks).
            result = connection.pgconn.exec_(b"DISCARD TEMP; UNLISTEN *; SELECT pg_advisory_unlock_all()")
            if result.status not in (ExecStatus.COMMAND_OK, ExecStatus.TUPLES_OK):
                return False
        except Exception:  # noqa: BLE001 - a connection that cannot be reset is closed
            return False
        return connection.info.transaction_status == TransactionStatus.IDLE

    def usable(self, connection) -> bool:
        from psycopg.pq import ConnStatus, TransactionStatus

        if connection.closed or connection.broken:
            return False
        pgconn = connection.pgconn
        if pgconn.transaction_status != TransactionStatus.IDLE:
            return False
        # The server may have ended the session while it was idle (a restart,
        # pg_terminate_backend): its goodbye (an error message, then the end
        # of the stream) is then waiting on the socket. Reading the end of
        # the stream marks the connection bad; a notice alone leaves it good.
        try:
            for _ in range(4):
                if not _readable(pgconn.socket):
                    break
                pgconn.consume_input()
                pgconn.is_busy()  # parses what was read
                if pgconn.status != ConnStatus.OK:
                    return False
            else:
                return False  # still more to read: not the quiet idle connection it should be
        except Exception:  # noqa: BLE001 - any failure here means "do not lend it"
            return False
        return pgconn.status == ConnStatus.OK and pgconn.transaction_status == TransactionStatus.IDLE


def _readable(fd: int) -> bool:
    """Whether ``fd`` has something to read now (``poll``: no limit on descriptor numbers, unlike ``select``)."""
    if hasattr(select, "poll"):
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        return bool(poller.poll(0))
    return bool(select.select([fd], [], [], 0)[0])


def unlent_cursor(connection, *args, **kwargs):
    """The cursor factory of an idle shared connection: it makes no cursor (the connection serves no tenant)."""
    from psycopg import InterfaceError

    raise InterfaceError(
        "this connection is idle in its server's shared connections and serves no tenant: "
        "use the tenant's connection (connections['tenant:<slug>'])"
    )


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


def _milliseconds(seconds: float) -> str:
    """A ``lock_timeout`` value: whole milliseconds, at least one (``0`` would mean no limit)."""
    return f"{max(1, round(seconds * 1000))}ms"
