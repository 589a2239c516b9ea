"""MySQL / MariaDB dialect plugin for tenant-schema.

Every DDL statement commits implicitly, so tenant-schema undoes what a
failed call created. ``CREATE DATABASE IF NOT EXISTS`` makes creation
idempotent under concurrency; indexes on TEXT/BLOB columns get a prefix
length (error 1170 otherwise); ``DROP INDEX`` needs the table.
"""

from __future__ import annotations

from typing import Any

from tenant_schema import hookimpl
from tenant_schema.dialects import Dialect


class MySQLDialect(Dialect):
    name = "mysql"
    engine = "django.db.backends.mysql"
    schemes = ("mysql", "mariadb", "mysql2")

    can_rollback_ddl = False
    max_identifier_length = 64
    text_index_prefix_length = 191

    exists_database_sql = "SELECT 1 FROM information_schema.schemata WHERE schema_name = %s"

    def server_settings(self, parsed: dict[str, Any]) -> dict[str, Any]:
        parsed["NAME"] = parsed.get("NAME") or ""
        parsed["OPTIONS"].setdefault("charset", "utf8mb4")
        return parsed

    def database_exists(self, server, name: str) -> bool:
        with server.connection().cursor() as cursor:
            cursor.execute(self.exists_database_sql, [name])
            return cursor.fetchone() is not None

    def create_database(self, server, name: str) -> bool:
        connection = server.connection()
        existed = self.database_exists(server, name)
        with connection.cursor() as cursor:
            cursor.execute(
                f"CREATE DATABASE IF NOT EXISTS {connection.ops.quote_name(name)} "
                "CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci"
            )
        return not existed

    def drop_database(self, server, name: str) -> bool:
        connection = server.connection()
        existed = self.database_exists(server, name)
        with connection.cursor() as cursor:
            cursor.execute(f"DROP DATABASE IF EXISTS {connection.ops.quote_name(name)}")
        return existed


@hookimpl
def tenant_schema_register_dialects(register):
    register(MySQLDialect)
