"""A third-party dialect plugin, installed by tenant-schema's tests like any package.

It adds a new dialect name (``litefile``: SQLite files under a directory,
selected by ``litefile://`` URLs) and an after-create DDL hook that, on this
dialect only, gives every table a ``<table>_audit`` companion table.
"""

from tenant_schema_sqlite import SQLiteDialect

from tenant_schema import hookimpl


class LiteFileDialect(SQLiteDialect):
    name = "litefile"
    schemes = ("litefile",)
    file_suffix = ".lite"


@hookimpl
def tenant_schema_register_dialects(register):
    register(LiteFileDialect)


@hookimpl
def tenant_schema_after_create_table(dialect, schema_editor, model, table_name):
    if dialect.name != "litefile":
        return None
    audit = schema_editor.quote_name(f"{table_name}_audit")
    return [f"CREATE TABLE {audit} (id INTEGER PRIMARY KEY, note TEXT)"]


@hookimpl
def tenant_schema_before_drop_table(dialect, schema_editor, model, table_name):
    if dialect.name != "litefile":
        return None
    return [f"DROP TABLE IF EXISTS {schema_editor.quote_name(table_name + '_audit')}"]
