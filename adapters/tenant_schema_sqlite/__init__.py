"""SQLite dialect plugin for tenant-schema.

A server is a directory; a tenant database is a file in it. Creation is an
exclusive file create (``open(path, "x")``), so two processes racing end
with one file; cloning copies a template file. Tenant connections open the
file as a ``mode=rw`` URI, so they never create one: only
``create_database`` does. Every tenant connection has ``ATTACH`` disabled, so
SQL on one tenant's connection cannot open another tenant's file.
"""

from __future__ import annotations

import os
import sqlite3
import tempfile
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import OperationalError
from django.db.backends.signals import connection_created

from tenant_schema import hookimpl
from tenant_schema.dialects import Dialect


class SQLiteDialect(Dialect):
    name = "sqlite"
    engine = "django.db.backends.sqlite3"
    schemes = ("sqlite",)

    # can_rollback_ddl: true, from the Django backend's features.
    can_clone_databases = True
    # max_identifier_length: Django's SQLite backend sets no limit, so the
    # portable 63 (dialects.PORTABLE_IDENTIFIER_LENGTH) keeps names portable.
    file_suffix = ".sqlite3"

    def server_settings(self, parsed: dict[str, Any]) -> dict[str, Any]:
        """A server is a directory; a relative one is relative to ``BASE_DIR`` (else the working directory)."""
        path = Path(parsed.get("NAME") or "var/tenants")
        if not path.is_absolute():
            base = getattr(settings, "BASE_DIR", None)
            path = (Path(base) if base else Path.cwd()) / path
        parsed["NAME"] = str(path)
        return parsed

    def file(self, server, name: str) -> Path:
        """The file of database ``name`` on ``server``: ``<server.path>/<name><file_suffix>``.

        Every other method finds the file through this one, so a subclass
        moves or renames tenant files by overriding it (or ``file_suffix``).
        """
        return server.path / f"{name}{self.file_suffix}"

    def tenant_settings(self, server, database_name: str) -> dict[str, Any]:
        """The server's settings with ``NAME`` the URI ``file:///.../<file>?mode=rw`` (not a path)."""
        settings = dict(server.settings)
        settings["OPTIONS"] = dict(settings.get("OPTIONS", {}))
        # A URI opened read-write but never create: a request routed to a
        # tenant whose file was dropped fails, instead of recreating it empty.
        settings["NAME"] = f"{self.file(server, database_name).absolute().as_uri()}?mode=rw"
        return settings

    def database_exists(self, server, name: str) -> bool:
        return self.file(server, name).exists()

    def create_database(self, server, name: str) -> bool:
        server.path.mkdir(parents=True, exist_ok=True)
        try:
            with open(self.file(server, name), "x"):
                pass  # an empty file is a valid, empty SQLite database
        except FileExistsError:
            return False
        return True

    def drop_database(self, server, name: str) -> bool:
        path = self.file(server, name)
        existed = path.exists()
        for suffix in ("", "-wal", "-shm", "-journal"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
        return existed

    def clone_database(self, server, template: str, name: str) -> bool:
        source, target = self.file(server, template), self.file(server, name)
        server.path.mkdir(parents=True, exist_ok=True)
        # Copy to a temporary name, then link into place: never a half-copied file.
        fd, tmp = tempfile.mkstemp(dir=server.path, suffix=".tmp")
        os.close(fd)
        try:
            _backup(source, tmp)
            try:
                os.link(tmp, target)
            except FileExistsError:
                return False
        finally:
            os.unlink(tmp)
        return True

    #: The counter of a table whose key is ``AUTOINCREMENT`` (Django's ``AutoField`` on SQLite): the last key used.
    next_key_sql = "SELECT seq FROM sqlite_sequence WHERE name = %s"

    def wait_for_writers(self, connection, tables, timeout):
        """``BEGIN IMMEDIATE`` under ``busy_timeout``, rolled back at once: it waits for the one write
        transaction a database file allows to end; readers are not held up."""
        with connection.cursor() as cursor:
            cursor.execute("PRAGMA busy_timeout")
            (before,) = cursor.fetchone()
            cursor.execute(f"PRAGMA busy_timeout = {max(1, round(timeout * 1000))}")
            try:
                cursor.execute("BEGIN IMMEDIATE")
                cursor.execute("ROLLBACK")
            except OperationalError as exc:
                if "locked" in str(exc):  # SQLITE_BUSY once busy_timeout has passed
                    raise TimeoutError(f"the database stayed locked for {timeout:g} s: {exc}") from exc
                raise
            finally:
                cursor.execute(f"PRAGMA busy_timeout = {int(before)}")
        return True

    def next_key(self, connection, table, column):
        """One past ``sqlite_sequence``'s last key; ``None`` for a table that is not ``AUTOINCREMENT``
        or never used it."""
        with connection.cursor() as cursor:
            if not _has_table(cursor, "sqlite_sequence"):
                return None
            cursor.execute(self.next_key_sql, [table])
            row = cursor.fetchone()
        return None if row is None else int(row[0]) + 1

    def set_next_key(self, connection, table, column, value):
        with connection.cursor() as cursor:
            cursor.execute("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = %s", [table])
            row = cursor.fetchone()
            if row is None or "AUTOINCREMENT" not in (row[0] or "").upper():
                return False
            cursor.execute("UPDATE sqlite_sequence SET seq = %s WHERE name = %s", [value - 1, table])
            if not cursor.rowcount:
                cursor.execute("INSERT INTO sqlite_sequence (name, seq) VALUES (%s, %s)", [table, value - 1])
        return True

    def rename_database(self, server, old: str, new: str) -> bool:
        source, target = self.file(server, old), self.file(server, new)
        try:
            os.link(source, target)  # atomic, and never over an existing file
        except FileExistsError:
            return False
        source.unlink()
        return True


def _has_table(cursor, name: str) -> bool:
    cursor.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = %s", [name])
    return cursor.fetchone() is not None


def _backup(source: Path, target: str) -> None:
    """Copy a database file with SQLite's backup API: a consistent copy even while it is read."""
    src = sqlite3.connect(f"file:{source}?mode=ro", uri=True)
    try:
        dst = sqlite3.connect(target)
        try:
            src.backup(dst)
        finally:
            dst.close()
    finally:
        src.close()


def forbid_attach(sender, connection, **kwargs) -> None:
    """No ``ATTACH DATABASE`` on a tenant connection: it fails with "too many attached databases".

    A tenant's file is its whole world; without this, ``ATTACH`` on its
    connection reads or writes any file the process can, another tenant's
    included. Server and site connections are left alone.
    """
    from tenant_schema.databases import ALIAS_PREFIX

    raw = getattr(connection, "connection", None)
    if connection.alias.startswith(ALIAS_PREFIX) and isinstance(raw, sqlite3.Connection):
        raw.setlimit(sqlite3.SQLITE_LIMIT_ATTACHED, 0)


connection_created.connect(forbid_attach, dispatch_uid="tenant_schema_sqlite.forbid_attach")


@hookimpl
def tenant_schema_register_dialects(register):
    register(SQLiteDialect)
