"""tenant-schema: database-per-tenant for Django.

The public API is importable from here; modules load on first use, so
``import tenant_schema`` (which Django does at start-up) costs nothing.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "configure": "standalone",
    "hookimpl": "hookspecs",
    "hookspec": "hookspecs",
    "Dialect": "dialects",
    "IndexSpec": "dialects",
    "TenantDatabase": "databases",
    "get_or_create_tenant_db": "lifecycle.seed",
    "aget_or_create_tenant_db": "lifecycle.seed",
    "get_tenant_db": "registry",
    "drop_tenant_db": "lifecycle.seed",
    "close_tenant_connections": "databases",
    "register_table": "schema.ddl",
    "register_tables": "schema.ddl",
    "drop_table": "schema.ddl",
    "table_exists": "schema.ddl",
    "list_tables": "schema.ddl",
    "create_index": "schema.indexes",
    "create_indexes": "schema.indexes",
    "drop_index": "schema.indexes",
    "list_indexes": "schema.indexes",
    "IndexInfo": "schema.indexes",
    "Table": "schema.tables",
    "SchemaMismatch": "exceptions",
    "TenantSchemaError": "exceptions",
    "TenantDatabaseDoesNotExist": "exceptions",
    "NoTenantSelected": "exceptions",
    "TenantNotFound": "exceptions",
    "UnknownDialect": "exceptions",
    "UnknownServer": "exceptions",
    "CrossTenantAccess": "exceptions",
    "tenant_context": "context",
    "current_tenant": "context",
    "register_tenant": "lifecycle.register",
    "aregister_tenant": "lifecycle.register",
    "get_tenant": "registry",
    "Tenant": "models",
    "NotOurDatabase": "exceptions",
    "TenantNotReady": "exceptions",
    "migrate_tenants": "lifecycle.fleet",
    "archive_tenant": "lifecycle.archive",
    "purge_tenant": "lifecycle.archive",
    "restore_tenant": "lifecycle.archive",
    "set_maintenance": "lifecycle.archive",
    "TenantUnavailable": "exceptions",
    "move_tenant": "lifecycle.move",
    "kept_copies": "lifecycle.move",
    "drop_kept_copies": "lifecycle.move",
    "MoveFailed": "exceptions",
    "TenantMoved": "exceptions",
    "export_tenant": "lifecycle.exchange",
    "import_tenant": "lifecycle.exchange",
    "drop_abandoned_imports": "lifecycle.exchange",
    "CopyFailed": "exceptions",
    "ImportFailed": "exceptions",
    "InvalidExport": "exceptions",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'tenant_schema' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
