"""``tenant_restore <slug>``: bring an archived tenant back to ready.

Its database must still be there and be the tenant's (ownership marker);
migrations it missed while archived are applied first. A failure leaves the
row archived, and the command can be run again.
"""

from __future__ import annotations

from django.core.management.base import BaseCommand

from ..inspection import command_errors


class Command(BaseCommand):
    help = (
        "Restore an archived tenant: check that its database is still there and is the tenant's, apply "
        "the migrations it lacks, and serve it again."
    )

    def add_arguments(self, parser):
        parser.add_argument("slug")

    def handle(self, *args, slug, **options):
        from ...lifecycle.archive import restore_tenant

        with command_errors():
            tenant = restore_tenant(slug)
        line = (
            f"Tenant {tenant.slug!r} restored: ready on {tenant.server!r} ({tenant.dialect_name}, "
            f"database {tenant.database_name!r}), at the current migrations."
        )
        if tenant.maintenance:
            line += f" It is still in maintenance mode: 'tenant_maintenance {tenant.slug} off' ends it."
        self.stdout.write(line)
