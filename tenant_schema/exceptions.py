"""Errors raised by tenant-schema, so callers can catch ours and nothing else."""

from django.core.exceptions import ImproperlyConfigured


class TenantSchemaError(Exception):
    """Base class of every tenant-schema error."""


class UnknownDialect(TenantSchemaError, ImproperlyConfigured):
    """A server URL names a scheme no installed plugin handles."""


class UnknownServer(TenantSchemaError, ImproperlyConfigured):
    """A server key is not in ``TENANT_SCHEMA["SERVERS"]``."""


class TenantDatabaseDoesNotExist(TenantSchemaError, LookupError):
    """The tenant has no database (or schema) on its server."""


class SchemaMismatch(TenantSchemaError):
    """A table exists with columns other than the ones being registered."""


class NoTenantSelected(TenantSchemaError):
    """A tenant model was queried with no current tenant: routing fails closed."""


class TenantNotFound(TenantSchemaError, LookupError):
    """No tenant with that slug is registered."""


class CrossTenantAccess(TenantSchemaError):
    """An object loaded from one tenant was used while another tenant is selected."""


class TenantNotReady(TenantSchemaError):
    """``tenant_context`` was asked for a tenant that is not ``ready`` (provisioning, failed, archived).

    Pass ``maintenance=True`` to select it on purpose (migrations, exports, repairs).
    """


class NotOurDatabase(TenantSchemaError):
    """A database (or schema) exists under a tenant's name but this registry did not create it.

    tenant-schema never uses, changes or drops such a database.
    """


class TenantUnavailable(TenantSchemaError):
    """A write to a tenant in maintenance mode, refused before any SQL; reads still work.

    ``slug`` names the tenant. ``TenantMiddleware`` answers it with a 503.
    """

    def __init__(self, slug: str) -> None:
        self.slug = slug
        super().__init__(
            f"tenant {slug!r} is in maintenance mode: writes to it are refused, reads still work; "
            f"end it with `manage.py tenant_maintenance {slug} off` (set_maintenance({slug!r}, False))"
        )

    def __reduce__(self):  # pickled by slug (task queues, worker processes), not by message
        return (type(self), (self.slug,))


class RegistryNotMigrated(TenantSchemaError):
    """The tenant registry's table does not exist yet: ``manage.py migrate`` was not run."""


class CopyFailed(TenantSchemaError):
    """Rows could not be copied into a new database, or the copy is not equal to what it was copied from.

    The message names what failed: the table, column and row key of a
    value the target cannot hold, or the tables whose row counts or
    checksums differ. ``move_tenant`` raises it as ``MoveFailed``,
    ``import_tenant`` as ``ImportFailed``.
    """


class MoveFailed(CopyFailed):
    """``move_tenant`` stopped before switching: the tenant stays where it was, in its maintenance mode as before.

    The message names what failed (a table, column and row key for a value
    the target cannot hold; the tables whose row counts or checksums differ).
    The half-written target database is dropped.
    """


class TenantMoved(TenantUnavailable):
    """A write through a ``TenantDatabase`` (or a ``Table`` of it) bound to where the tenant lived before a move.

    Refused before any SQL, so nothing is written to the copy the move kept:
    get the tenant's database (or table) again, from the registry. A request
    that began before the switch gets it too; as a ``TenantUnavailable``,
    ``TenantMiddleware`` answers it with a 503, and the retry reaches the
    tenant's new database.
    """

    def __init__(self, slug: str, message: str = "") -> None:
        self.slug = slug
        TenantSchemaError.__init__(
            self, message or f"tenant {slug!r} was moved: this handle is bound to its old database"
        )

    def __reduce__(self):
        return (type(self), (self.slug, str(self)))


class ImportFailed(CopyFailed):
    """``import_tenant`` stopped before the new tenant existed: nothing was imported.

    The message names what failed (a value the target cannot hold, by
    table, column and row key; the tables whose rows or checksums differ
    from the export's manifest). The half-written database is dropped and
    its registry row deleted.
    """


class InvalidExport(TenantSchemaError, ValueError):
    """A file ``import_tenant`` cannot read as a tenant export: not a ZIP file, no manifest, an unknown
    format or version, a malformed row. The message names the file and what is wrong with it."""
