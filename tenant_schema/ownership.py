"""The ownership marker: proof that a database is the one this registry made for a tenant.

When tenant-schema creates a tenant's database (or schema) it writes one row
into a small table in it, ``tenant_schema_owner``, holding the tenant row's
``uid`` and slug. (The rows ``tenant_move`` makes, a move's target and the
source it keeps, hold the moved tenant's uid in ``copy_of``: their
databases are marked with that uid, ``Tenant.owner_uid``, so the target is
the tenant's the moment the registry switches to it, and both stay
droppable.) Registration, resumption, re-creation, purge and fleet
migration act on a database only when that row matches the registry's:

- a database that already exists under the derived name but was made by
  someone else (another site sharing the server and ``DATABASE_PREFIX``,
  another application, a registry restored from an older backup whose row
  has a different uid) is refused with ``NotOurDatabase`` and never modified;
- a marker that matches lets an interrupted registration resume.

The marker is read and written through ``TenantDatabase.admin_connection``
(the server URL's own user), so it works before a per-tenant role has any
privilege, and a tenant's role cannot forge one for another tenant.
"""

from __future__ import annotations

from django.db import DatabaseError, models
from django.utils import timezone

from . import django_private
from .exceptions import NotOurDatabase

MARKER_TABLE = "tenant_schema_owner"
#: The origin of a clone template's marker: its tenant_uid is the migration
#: fingerprint the template holds, not a tenant's.
TEMPLATE_ORIGIN = "template"

_model: type[models.Model] | None = None


def marker_model() -> type[models.Model]:
    """The marker table's model, built on first use (like Django's ``MigrationRecorder.Migration``)."""
    global _model
    if _model is None:

        class OwnerMarker(models.Model):
            # One row, always pk 1: a second writer fails on the key instead of adding a row.
            id = models.IntegerField(primary_key=True, default=1)
            tenant_uid = models.CharField(max_length=32)
            #: "created" (this registry created the database), "claimed" (an operator
            #: said it is the tenant's: never dropped and re-created) or "template"
            #: (a clone template, whose tenant_uid is the migration fingerprint it holds).
            origin = models.CharField(max_length=10, default="created")
            slug = models.CharField(max_length=40)
            created_at = models.DateTimeField()

            class Meta:
                apps = django_private.isolated_apps("tenant_schema_owner")
                app_label = "tenant_schema_owner"
                db_table = MARKER_TABLE

        _model = OwnerMarker
    return _model


def owner_uid(tenant):
    """The uid a database of ``tenant``'s row is marked with (``Tenant.owner_uid``; a stand-in row's ``uid``)."""
    return getattr(tenant, "owner_uid", None) or tenant.uid


def _has_table(connection) -> bool:
    with connection.cursor() as cursor:
        return MARKER_TABLE in connection.introspection.table_names(cursor)


def read_marker(tenant_db):
    """The database's marker row, or ``None`` when it has none.

    A marker table holding anything but exactly one row is nobody's proof of
    ownership: ``NotOurDatabase``. A database error is raised as it is (it is
    not "no marker").
    """
    connection = tenant_db.admin_connection
    if not _has_table(connection):
        return None
    rows = list(marker_model().objects.using(connection.alias).order_by("pk")[:2])
    if len(rows) > 1:
        raise NotOurDatabase(
            f"database {tenant_db.name!r} on server {tenant_db.server.key!r} has more than one ownership "
            "marker: two registries claim it, so tenant-schema will not use, change or drop it"
        )
    return rows[0] if rows else None


def write_marker(tenant_db, tenant, *, origin: str = "created", empty: bool = False) -> None:
    """Mark the database as ``tenant``'s (table and row in one step where DDL rolls back).

    The row has a fixed key: if another writer got there first, this fails
    instead of adding a second marker. ``empty=True``: the caller has just
    created the database, so the catalogue is not asked whether the table exists.
    """
    connection = tenant_db.admin_connection
    model = marker_model()

    def insert() -> None:
        model.objects.using(connection.alias).create(
            id=1, tenant_uid=owner_uid(tenant).hex, origin=origin, slug=tenant.slug, created_at=timezone.now()
        )

    if not empty and _has_table(connection):
        insert()  # IntegrityError when a marker is there already
        return
    with connection.schema_editor(atomic=connection.features.can_rollback_ddl) as editor:
        editor.create_model(model)
        insert()


def rewrite_marker(tenant_db, tenant, *, expected: str = "") -> str:
    """Make the marker of a database cloned from a clone template ``tenant``'s; the plan fingerprint it held.

    A clone carries its template's marker (origin ``template``, holding the
    migration fingerprint the template was built at); only such a marker is
    rewritten, so no tenant's marker is ever taken over. The caller compares
    the returned fingerprint with its own plan: a clone of another plan's
    template still needs migrating. ``expected``, the fingerprint the caller
    believes the template held: then one conditional UPDATE does it when it
    did (no catalogue query, no read), and only otherwise is the marker read.
    """
    connection = tenant_db.admin_connection
    if expected and not connection.in_atomic_block:
        try:
            updated = _rewrite(connection, tenant, expected)
        except DatabaseError:  # no marker table: not a clone; the reads below say whose it is
            updated = 0
        if updated == 1:
            return expected
    marker = read_marker(tenant_db)
    if marker is None or marker.origin != TEMPLATE_ORIGIN:
        check_owner(tenant_db, tenant)  # NotOurDatabase, naming whose it is
        return ""
    if _rewrite(connection, tenant, marker.tenant_uid) != 1:
        check_owner(tenant_db, tenant)
    return marker.tenant_uid


def _rewrite(connection, tenant, held: str) -> int:
    """The template marker holding ``held``, rewritten as ``tenant``'s: 1, or 0 when there is no such marker."""
    return (
        marker_model()
        .objects.using(connection.alias)
        .filter(pk=1, origin=TEMPLATE_ORIGIN, tenant_uid=held)
        .update(tenant_uid=owner_uid(tenant).hex, origin="created", slug=tenant.slug, created_at=timezone.now())
    )


def is_unclaimed_clone(tenant_db) -> bool:
    """Whether the database still carries a clone template's marker (a clone nobody has marked yet)."""
    marker = read_marker(tenant_db)
    return marker is not None and marker.origin == TEMPLATE_ORIGIN


def was_created_here(tenant_db) -> bool:
    """Whether the marker says this registry created the database (not an operator's claim)."""
    marker = read_marker(tenant_db)
    return marker is not None and marker.origin == "created"


def check_owner(tenant_db, tenant) -> None:
    """Raise ``NotOurDatabase`` unless the database's marker is ``tenant``'s."""
    marker = read_marker(tenant_db)
    if marker is not None and marker.tenant_uid == owner_uid(tenant).hex:
        return
    where = f"{tenant_db.dialect.name} server {tenant_db.server.key!r}"
    kind = "schema" if tenant_db.server.isolation == "schema" else "database"
    if marker is None:
        why = "it has no tenant-schema ownership marker, so this registry did not create it"
    else:
        why = f"its ownership marker belongs to another registry's tenant {marker.slug!r}"
    raise NotOurDatabase(
        f"{kind} {tenant_db.name!r} on {where} exists but is not tenant {tenant.slug!r}'s: {why}. "
        "tenant-schema will not use, change or drop it. Register the tenant under another slug "
        "or DATABASE_PREFIX; if it is a leftover of this tenant that you have checked, run "
        f"`manage.py tenant_claim {tenant.slug}`, or remove it yourself."
    )
