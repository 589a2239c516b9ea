"""CockroachDB dialect plugin for tenant-schema (through django-cockroachdb).

CockroachDB cannot roll DDL back (``can_rollback_ddl = False``) and wants one
schema change per transaction, so tenant-schema runs each statement in
autocommit and undoes what a failed call created. It has ``IF NOT EXISTS``
for databases and schemas, addresses an index as ``table@name`` and offers
hash-sharded indexes (``USING HASH``) against hot ranges on sequential keys.
"""

from __future__ import annotations

from tenant_schema_postgres import PostgresDialect

from tenant_schema import hookimpl


class CockroachDialect(PostgresDialect):
    name = "cockroach"
    engine = "django_cockroachdb"
    schemes = ("cockroach", "cockroachdb")

    # can_rollback_ddl: false, from the Django backend's features.
    can_clone_databases = False
    # max_identifier_length: 63, from django-cockroachdb's backend (PostgreSQL's operations).
    supports_hash_sharded_indexes = True
    ddl_one_statement_per_transaction = True
    reserved_database_names = PostgresDialect.reserved_database_names | {
        "system",
        "defaultdb",
        "crdb_internal",
        "pg_extension",
    }

    exists_database_sql = "SELECT 1 FROM pg_catalog.pg_database WHERE datname = %s"
    hash_index_template = "CREATE INDEX %(name)s ON %(table)s (%(columns)s) USING HASH%(extra)s%(condition)s"
    hash_unique_index_template = (
        "CREATE UNIQUE INDEX %(name)s ON %(table)s (%(columns)s) USING HASH%(extra)s%(condition)s"
    )
    drop_index_template = "DROP INDEX IF EXISTS %(table)s@%(name)s CASCADE"

    def wait_for_writers(self, connection, tables, timeout):
        """``False``: CockroachDB has no ``LOCK TABLE``; a move relies on its verification reading the source again."""
        return False

    def next_key(self, connection, table, column):
        """``None``: keys come from ``unique_rowid()``, not a counter, so there is none to carry over."""
        return None

    def set_next_key(self, connection, table, column, value):
        """``False``: no counter to set (``next_key``)."""
        return False

    def server_settings(self, parsed):
        parsed["NAME"] = parsed.get("NAME") or "defaultdb"
        return parsed

    def create_database_sql(self, server, quoted: str) -> str:
        # No IF NOT EXISTS: of two creators racing, exactly one may be told it
        # created the database (the other gets 42P04/42P06, "already there").
        kind = "SCHEMA" if self._is_schema(server) else "DATABASE"
        return f"CREATE {kind} {quoted}"

    def drop_database_sql(self, server, quoted: str) -> str:
        kind = "SCHEMA" if self._is_schema(server) else "DATABASE"
        return f"DROP {kind} IF EXISTS {quoted} CASCADE"

    def clone_database(self, server, template, name):
        return False

    def create_index_sql(self, schema_editor, model, index):
        if not index.options.get("hash_sharded"):
            return super().create_index_sql(schema_editor, model, index)
        template = self.hash_unique_index_template if index.unique else self.hash_index_template
        return self.index_statement(schema_editor, model, index, template=template)

    def drop_index_sql(self, schema_editor, model, name, constraint):
        quote = schema_editor.quote_name
        return self.drop_index_template % {"table": quote(model._meta.db_table), "name": quote(name)}

    # -- per-tenant roles (tenant_roles=true) ------------------------------
    # PostgreSQL's statements, with CockroachDB's role options. Untested
    # against a live cluster here (the suite checks the generated SQL).
    #: CockroachDB has no SUPERUSER/REPLICATION/BYPASSRLS role options.
    role_options = "LOGIN NOCREATEDB NOCREATEROLE"

    def role_name(self, server, database_name):
        # Role names are case-insensitive and stored in lower case.
        return super().role_name(server, database_name).lower()

    def role_password(self, role, password):
        # Sent as a bound parameter; CockroachDB hashes it (and redacts it in its logs).
        return password

    def end_role_sessions_sql(self, role):
        return None  # a dropped role cannot log in again; open sessions end with the database


@hookimpl
def tenant_schema_register_dialects(register):
    register(CockroachDialect)
