"""PostgreSQL dialect plugin for tenant-schema.

Databases are created on a separate server-level connection (to the
``postgres`` maintenance database, or the URL's database), in autocommit,
because ``CREATE DATABASE`` cannot run in a transaction block and has no
``IF NOT EXISTS``: existence is checked in ``pg_database`` and a concurrent
creator's ``DuplicateDatabase`` is treated as "already there".
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from typing import Any

from django.db import DatabaseError, transaction

from tenant_schema import hookimpl
from tenant_schema.dialects import ISOLATION_SCHEMA, Dialect
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
        # A startup parameter, set once per physical connection. Behind a
        # transaction-pooling PgBouncer use database isolation instead.
        # libpq splits ``options`` on whitespace and takes backslash escapes,
        # so only a plain identifier may go in (checked again here, whoever
        # the caller is).
        validate_identifier(schema, "tenant schema name", self.max_identifier_length)
        settings["OPTIONS"]["options"] = f"-c search_path={schema}"

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
                cursor.execute(f"SET lock_timeout = '{self.drop_lock_timeout}'")
                try:
                    cursor.execute(self.drop_database_sql(server, connection.ops.quote_name(name)))
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
        try:
            with connection.cursor() as cursor:
                cursor.execute(f"CREATE DATABASE {quote(name)} TEMPLATE {quote(template)}")
        except DatabaseError as exc:
            if getattr(exc.__cause__, "sqlstate", None) in self.duplicate_sqlstates:
                return True
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


@hookimpl
def tenant_schema_register_dialects(register):
    register(PostgresDialect)
