"""``tenant_drop <slug>``: archive a tenant, or with ``--purge`` drop its data.

Archiving keeps the database and the registry row; routing stops serving the
tenant. Purging drops the database first and deletes the row only once the
drop succeeded, so a failure half-way leaves a row to retry from, never a
database nobody knows about.
"""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from ...names import normalize_slug
from ..inspection import command_errors, one_line


class Command(BaseCommand):
    help = (
        "Archive a tenant (its data stays; it is no longer served). With --purge, drop its "
        "database and registry row for good, after typing the slug to confirm."
    )

    def add_arguments(self, parser):
        parser.add_argument("slug")
        parser.add_argument("--purge", action="store_true", help="Drop the tenant's database and registry row.")
        parser.add_argument(
            "--noinput",
            "--no-input",
            action="store_false",
            dest="interactive",
            help="Do not ask for confirmation (for scripts).",
        )

    def handle(self, *args, slug, purge, interactive, **options):
        from ...lifecycle.archive import archive_tenant, purge_tenant
        from ...registry import get_tenant

        with command_errors():
            slug = normalize_slug(slug)
            tenant = get_tenant(slug)
            if not purge:
                tenant = archive_tenant(tenant)
                self.stdout.write(
                    f"Tenant {slug!r} archived; its database {tenant.database_name!r} on "
                    f"{tenant.server!r} is kept. Use --purge to drop it."
                )
                return
        if interactive:
            self.confirm(tenant)
        try:
            dropped = purge_tenant(tenant)
        except Exception as exc:  # noqa: BLE001 - reported on one line, row kept
            raise CommandError(
                f"could not purge {slug!r}: {one_line(exc)}; its registry row is kept, "
                f"run 'tenant_drop {slug} --purge' again once the cause is fixed"
            ) from None
        if dropped:
            self.stdout.write(
                f"Tenant {slug!r} purged: database {tenant.database_name!r} dropped, registry row deleted."
            )
        else:
            self.stdout.write(
                f"Tenant {slug!r} purged: its database {tenant.database_name!r} was never created (or was "
                "already gone), so nothing was dropped; registry row deleted."
            )

    def confirm(self, tenant) -> None:
        self.stdout.write(
            f"This drops database {tenant.database_name!r} on server {tenant.server!r} "
            f"({tenant.dialect_name}) with all the data of tenant {tenant.slug!r}. It cannot be undone."
        )
        try:
            answer = input(f"Type the tenant's slug ({tenant.slug}) to confirm: ").strip()
        except EOFError:
            answer = ""
        if not answer:
            raise CommandError(f"purge of {tenant.slug!r} cancelled: nothing was typed")
        if answer != tenant.slug:
            raise CommandError(
                f"purge of {tenant.slug!r} cancelled: {answer!r} was typed, not the slug {tenant.slug!r}"
            )
