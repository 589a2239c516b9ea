"""The tenant registry: one row per tenant, in the ``default`` database.

The row holds where the tenant lives (server key and database/schema name)
and where its provisioning stands, never credentials: servers come from
``TENANT_SCHEMA["SERVERS"]``.
"""

from __future__ import annotations

import uuid

from django.core.exceptions import ValidationError
from django.db import models
from django.utils.translation import gettext_lazy as _

from . import names
from .names import validate_identifier

DATABASE_NAME_MAX_LENGTH = 64  # the longest any dialect allows; each dialect checks its own limit on use


def validate_slug(value: str) -> None:
    try:
        names.validate_slug(value)
    except ValueError as exc:
        raise ValidationError(str(exc), code="invalid_tenant_slug") from None


def validate_database_name(value: str) -> None:
    """A database name reaches file paths and connection options: identifiers only."""
    try:
        validate_identifier(value, "tenant database name", DATABASE_NAME_MAX_LENGTH)
    except ValueError as exc:
        raise ValidationError(str(exc), code="invalid_database_name") from None


class Tenant(models.Model):
    class Status(models.TextChoices):
        PROVISIONING = "provisioning", _("provisioning")
        READY = "ready", _("ready")
        FAILED = "failed", _("failed")
        ARCHIVED = "archived", _("archived")
        #: A provisioned database in a server's warm pool, not yet any tenant's
        #: (``register_tenant`` claims it); never served.
        POOLED = "pooled", _("pooled")
        #: A ``tenant_move`` target being filled with a tenant's rows (``copy_of``
        #: names the tenant); never served. It becomes the tenant's database
        #: when the move switches, or is dropped when the move fails. Also a
        #: ``tenant_import``'s new database being filled (slug ``import-<hex>``,
        #: no ``copy_of``), renamed to the tenant's slug and made ready once verified.
        MOVING = "moving", _("moving")
        #: The database a tenant was moved away from, kept (``copy_of`` names the
        #: tenant): its data as of the move. Never served, migrated or restored;
        #: dropped only on request (``tenant_move <slug> --drop-source``).
        COPY = "copy", _("kept copy")

    slug = models.CharField(max_length=40, unique=True, validators=[validate_slug])
    #: Written into the tenant's database as its ownership marker when the
    #: database is created; nothing acts on a database whose marker differs.
    uid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    name = models.CharField(max_length=200, blank=True)
    server = models.CharField(max_length=100, help_text=_("Key in TENANT_SCHEMA['SERVERS']."))
    database_name = models.CharField(
        max_length=DATABASE_NAME_MAX_LENGTH,
        validators=[validate_database_name],
        help_text=_("Database, or schema, holding the tenant's data."),
    )
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.PROVISIONING, db_index=True)
    last_error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    provisioned_at = models.DateTimeField(null=True, blank=True)
    #: Fingerprint of the migration plan the tenant's database was last
    #: brought to (or found at); empty when unknown. A fleet migration skips,
    #: without connecting, every tenant whose fingerprint is the current plan's.
    migrated_to = models.CharField(max_length=64, blank=True, default="", editable=False)
    #: Maintenance mode: the tenant stays ``ready`` and is served for reads,
    #: but writes through the ORM or the Table API raise ``TenantUnavailable``
    #: and ``TenantMiddleware`` answers unsafe requests with a 503.
    #: ``lifecycle.archive.set_maintenance`` switches it. On a ``moving`` row
    #: (never served) it keeps the tenant's mode from before the move, which
    #: the move puts back when it ends, also after a crash.
    maintenance = models.BooleanField(
        default=False,
        editable=False,
        help_text=_("Reads are served; writes are refused until maintenance ends."),
    )

    #: Set on the rows of ``tenant_move`` (slugs ``move-<hex>``, status
    #: ``moving`` or ``copy``): the ``uid`` of the tenant whose data the row's
    #: database holds. Its ownership marker holds that uid, not the row's own.
    copy_of = models.UUIDField(null=True, blank=True, editable=False, db_index=True)
    #: The process working on a ``tenant_move`` or ``tenant_import`` row
    #: (``host:pid``), empty when none; ``updated_at`` is its heartbeat. A move
    #: whose process is gone is taken over by the next ``tenant_move`` of the
    #: tenant; an import's is dropped by the next ``tenant_import``.
    held_by = models.CharField(max_length=100, blank=True, default="", editable=False)

    class Meta:
        ordering = ["slug"]
        verbose_name = _("tenant")
        verbose_name_plural = _("tenants")

    def __str__(self) -> str:
        return self.slug

    @property
    def owner_uid(self) -> uuid.UUID:
        """The uid the ownership marker of this row's database holds: ``copy_of`` for a move's rows, else ``uid``."""
        return self.copy_of or self.uid

    @property
    def database(self):
        """The tenant's ``TenantDatabase``: where the registry says it lives.

        Bound lazily to its connection alias; nothing is created and no SQL
        runs. Pass it (or the ``Tenant``, or the slug) to the table and
        index functions.
        """
        from .databases import bind_tenant_db

        return bind_tenant_db(self.slug, self.server, self.database_name)

    @property
    def dialect_name(self) -> str:
        from .servers import get_server

        try:
            return get_server(self.server).dialect.name
        except Exception:  # noqa: BLE001 - a removed server shows as unknown
            return "?"
