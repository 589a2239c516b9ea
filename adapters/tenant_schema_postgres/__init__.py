"""PostgreSQL dialect plugin for tenant-schema.

Databases are created on a separate server-level connection (to the
``postgres`` maintenance database, or the URL's database), in autocommit,
because ``CREATE DATABASE`` cannot run in a transaction block and has no
``IF NOT EXISTS``: existence is checked in ``pg_database`` and a concurrent
creator's ``DuplicateDatabase`` is treated as "already there".
"""

from __future__ import annotations

from typing import Any

from django.db import DatabaseError

from tenant_schema import hookimpl
from tenant_schema.dialects import ISOLATION_SCHEMA, Dialect
from tenant_schema.names import validate_identifier


class PostgresDialect(Dialect):
    name = "postgres"
    engine = "django.db.backends.postgresql"
    schemes = ("postgres", "postgresql", "pgsql")

    can_rollback_ddl = True
    supports_schema_isolation = True
    can_clone_databases = True
    max_identifier_length = 63

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

    def drop_database(self, server, name: str) -> bool:
        existed = self.database_exists(server, name)
        connection = server.connection()
        with connection.cursor() as cursor:
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


@hookimpl
def tenant_schema_register_dialects(register):
    register(PostgresDialect)
