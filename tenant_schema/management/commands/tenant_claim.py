"""``tenant_claim <slug>``: mark an unmarked database as the registered tenant's own."""

from __future__ import annotations

from django.core.management.base import BaseCommand

from ..inspection import command_errors


class Command(BaseCommand):
    help = (
        "Write the ownership marker into the database registered for SLUG when it has none "
        "(made by an older tenant-schema, or by a registration that died right after creating it). "
        "Only run it after checking that the database is the tenant's: tenant-schema will then "
        "migrate, resume and purge it. A database marked for another tenant is refused."
    )

    def add_arguments(self, parser):
        parser.add_argument("slug", help="A registered tenant.")

    def handle(self, *args, slug, **options):
        from ...provisioning import claim_tenant_database

        with command_errors():
            tenant = claim_tenant_database(slug)
        if options["verbosity"] >= 1:
            self.stdout.write(
                f"Database {tenant.database_name!r} on server {tenant.server!r} is marked as tenant {tenant.slug!r}'s."
            )
