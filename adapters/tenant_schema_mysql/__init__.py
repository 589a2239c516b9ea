"""MySQL / MariaDB dialect plugin for tenant-schema.

Every DDL statement commits implicitly, so tenant-schema undoes what a
failed call created. A plain ``CREATE DATABASE`` (error 1007 meaning
"already there") tells exactly one of two racing creators that it created
the database; indexes on TEXT/BLOB columns get a prefix
length (error 1170 otherwise); ``DROP INDEX`` needs the table.
"""

from __future__ import annotations

import contextlib
import logging
import math
from typing import Any

from django.db import DatabaseError, OperationalError, transaction

from tenant_schema import hookimpl
from tenant_schema.dialects import Dialect

logger = logging.getLogger("tenant_schema.mysql")

# Server error numbers (``exc.args[0]``) the drop path tells apart.
ER_DB_CREATE_EXISTS = 1007
ER_LOCK_WAIT_TIMEOUT = 1205
ER_NO_SUCH_THREAD = 1094
ER_KILL_DENIED = 1095


def _errno(exc: BaseException) -> int | None:
    code = exc.args[0] if exc.args else None
    return code if isinstance(code, int) else None


class MySQLDialect(Dialect):
    name = "mysql"
    engine = "django.db.backends.mysql"
    schemes = ("mysql", "mariadb", "mysql2")

    # can_rollback_ddl: false, from the Django backend's features.
    # max_identifier_length: 64, from Django's backend (connection.ops.max_name_length()).
    reserved_database_names = frozenset({"mysql", "sys", "information_schema", "performance_schema"})
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
        """``True`` only when this call created it: a plain ``CREATE DATABASE``, so of two
        creators racing exactly one succeeds and the other sees "already there" (1007)."""
        connection = server.connection()
        try:
            with connection.cursor() as cursor:
                cursor.execute(
                    f"CREATE DATABASE {connection.ops.quote_name(name)} "
                    "CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci"
                )
        except DatabaseError as exc:
            if _errno(exc) == ER_DB_CREATE_EXISTS:
                return False
            raise
        return True

    read_snapshot_sql = "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY"

    @contextlib.contextmanager
    def read_snapshot(self, connection):
        """One ``REPEATABLE READ``, ``READ ONLY`` transaction: InnoDB's consistent read, every read seeing
        the snapshot the first one took (Django's connections default to ``READ COMMITTED``)."""
        with transaction.atomic(using=connection.alias):
            with connection.cursor() as cursor:
                cursor.execute(self.read_snapshot_sql)  # for the transaction the next statement starts
            yield

    #: ``READ`` takes a metadata lock that waits for every transaction that wrote to the table (each holds
    #: one until it ends) and lets reads on.
    wait_for_writers_template = "LOCK TABLES %(tables)s"
    next_key_sql = (
        "SELECT AUTO_INCREMENT FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = %s"
    )
    set_next_key_template = "ALTER TABLE %(table)s AUTO_INCREMENT = %(value)d"

    def wait_for_writers(self, connection, tables, timeout):
        """``LOCK TABLES ... READ`` under ``lock_wait_timeout`` (whole seconds, for each table's lock),
        released at once (``UNLOCK TABLES``)."""
        if not tables:
            return True
        quoted = ", ".join(f"{connection.ops.quote_name(table)} READ" for table in tables)
        with connection.cursor() as cursor:
            cursor.execute("SELECT @@SESSION.lock_wait_timeout")
            (before,) = cursor.fetchone()
            cursor.execute("SET SESSION lock_wait_timeout = %s", [max(1, math.ceil(timeout))])
            try:
                cursor.execute(self.wait_for_writers_template % {"tables": quoted})
            except OperationalError as exc:
                if _errno(exc) == ER_LOCK_WAIT_TIMEOUT:
                    raise TimeoutError(f"a table lock waited {timeout:g} s: {exc}") from exc
                raise
            finally:
                cursor.execute("UNLOCK TABLES")
                cursor.execute("SET SESSION lock_wait_timeout = %s", [before])
        return True

    def next_key(self, connection, table, column):
        """The table's ``AUTO_INCREMENT`` (one per table: Django's key is its only auto-increment column)."""
        with connection.cursor() as cursor:
            if connection.mysql_is_mariadb:
                cursor.execute(self.next_key_sql, [table])
                row = cursor.fetchone()
            else:  # MySQL 8 caches the figure for a day unless told not to, for this read only
                cursor.execute("SELECT @@SESSION.information_schema_stats_expiry")
                (before,) = cursor.fetchone()
                cursor.execute("SET SESSION information_schema_stats_expiry = 0")
                try:
                    cursor.execute(self.next_key_sql, [table])
                    row = cursor.fetchone()
                finally:
                    cursor.execute("SET SESSION information_schema_stats_expiry = %s", [before])
        return None if row is None or row[0] is None else int(row[0])

    def set_next_key(self, connection, table, column, value):
        if self.next_key(connection, table, column) is None:
            return False
        with connection.cursor() as cursor:
            cursor.execute(self.set_next_key_template % {"table": connection.ops.quote_name(table), "value": value})
        return True

    #: Longest wait (seconds) of ``DROP DATABASE`` for a table lock, instead
    #: of the server's ``lock_wait_timeout`` (a day by default).
    drop_lock_wait_timeout = 10

    def drop_database(self, server, name: str) -> bool:
        """Drop ``name``, ending its other sessions first (as PostgreSQL's ``WITH (FORCE)``).

        ``DROP DATABASE`` waits for every session holding a lock on one of the
        database's tables, and a session idle in a transaction holds one until
        it ends. Sessions connected to the database are killed first; one that
        reached its tables from another database cannot be told apart from
        the rest, so the drop waits at most ``drop_lock_wait_timeout`` seconds
        for it and then fails saying so. Nothing is dropped then.
        """
        connection = server.connection()
        existed = self.database_exists(server, name)
        with connection.cursor() as cursor:
            ended = self.end_sessions(cursor, name)
            if ended:
                logger.warning(
                    "ended %d session(s) on database %s before dropping it: %s",
                    len(ended),
                    name,
                    ", ".join(map(str, ended)),
                )
            cursor.execute("SELECT @@SESSION.lock_wait_timeout")
            (previous,) = cursor.fetchone()
            cursor.execute("SET SESSION lock_wait_timeout = %s", [int(self.drop_lock_wait_timeout)])
            try:
                cursor.execute(f"DROP DATABASE IF EXISTS {connection.ops.quote_name(name)}")
            except OperationalError as exc:
                if _errno(exc) != ER_LOCK_WAIT_TIMEOUT:
                    raise
                raise OperationalError(self._still_locked(cursor, name)) from None
            finally:
                try:
                    cursor.execute("SET SESSION lock_wait_timeout = %s", [int(previous)])
                except DatabaseError:  # the connection is gone; so is the setting
                    pass
        return existed

    def end_sessions(self, cursor, name: str) -> list[int]:
        """Kill the other sessions whose current database is ``name``; their ids."""
        cursor.execute("SELECT id FROM information_schema.processlist WHERE db = %s AND id <> CONNECTION_ID()", [name])
        ended = []
        for (session,) in cursor.fetchall():
            try:
                cursor.execute(f"KILL CONNECTION {int(session)}")
            except DatabaseError as exc:
                if _errno(exc) not in (ER_NO_SUCH_THREAD, ER_KILL_DENIED):  # already gone / not ours
                    raise
            else:
                ended.append(int(session))
        return ended

    def _still_locked(self, cursor, name: str) -> str:
        message = (
            f"could not drop database {name!r}: another session still holds a lock on one of its tables "
            f"after {self.drop_lock_wait_timeout}s (a transaction that reached them from a connection "
            "to another database); nothing was dropped"
        )
        try:
            cursor.execute(
                "SELECT trx_mysql_thread_id FROM information_schema.innodb_trx "
                "WHERE trx_mysql_thread_id <> CONNECTION_ID() ORDER BY trx_mysql_thread_id"
            )
            sessions = [str(row[0]) for row in cursor.fetchall()]
        except DatabaseError:
            sessions = []
        if sessions:
            message += f"; sessions with an open transaction: {', '.join(sessions)}"
        return message + ". End that session (KILL <id>) or its transaction, then drop again"

    # -- per-tenant roles (tenant_roles=true) ------------------------------
    # Accounts are 'role'@'%', written as bound string literals (MySQL's
    # account syntax takes them; no identifier quoting involved).
    supports_tenant_roles = True
    #: MySQL 8 takes 32 characters, MariaDB 80: 32 fits both, so a name
    #: never depends on which of the two answers.
    max_role_name_length = 32
    #: Host part of every tenant account.
    role_host = "%"

    def role_exists(self, server, role: str) -> bool:
        with server.connection().cursor() as cursor:
            cursor.execute("SELECT 1 FROM mysql.user WHERE User = %s AND Host = %s", [role, self.role_host])
            return cursor.fetchone() is not None

    def create_role_sql(self, server, role, password):
        return [("CREATE USER IF NOT EXISTS %s@%s IDENTIFIED BY %s", (role, self.role_host, password))]

    def set_role_password_sql(self, server, role, password):
        return [("ALTER USER %s@%s IDENTIFIED BY %s", (role, self.role_host, password))]

    def grant_role_sql(self, server, role, database_name):
        # In GRANT ... ON db.*, '_' and '%' are wildcards: unescaped, the
        # grant on tenant_a_b would also cover tenant_aXb.
        pattern = database_name.replace("\\", "\\\\").replace("_", "\\_").replace("%", "\\%")
        quoted = server.connection().ops.quote_name(pattern)
        return [(f"GRANT ALL PRIVILEGES ON {quoted}.* TO %s@%s", (role, self.role_host))]

    def drop_role_sql(self, server, role, database_name):
        return [("DROP USER IF EXISTS %s@%s", (role, self.role_host))]

    def drop_role(self, server, role, database_name):
        # DROP USER does not end the user's open sessions, which keep their
        # privileges until they disconnect: end them first.
        if self.role_exists(server, role):
            with server.connection().cursor() as cursor:
                cursor.execute(
                    "SELECT id FROM information_schema.processlist WHERE user = %s AND id <> CONNECTION_ID()", [role]
                )
                for (session,) in cursor.fetchall():
                    try:
                        cursor.execute(f"KILL CONNECTION {int(session)}")
                    except DatabaseError as exc:
                        if _errno(exc) != ER_NO_SUCH_THREAD:
                            raise
        return super().drop_role(server, role, database_name)


@hookimpl
def tenant_schema_register_dialects(register):
    register(MySQLDialect)
