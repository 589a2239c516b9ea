"""``tenant_claim <slug> [slug ...]``: mark unmarked databases as the registered tenants' own."""

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
        parser.add_argument(
            "slugs",
            nargs="+",
            metavar="slug",
            help="Registered tenants, or the move-/import-/pool-<hex> row a message named.",
        )

    def handle(self, *args, slugs, **options):
        from ...lifecycle.seed import claim_tenant_database

        for slug in slugs:
            with command_errors():
                tenant = claim_tenant_database(slug)
            if options["verbosity"] >= 1:
                self.stdout.write(
                    f"Database {tenant.database_name!r} on server {tenant.server!r} is marked as tenant "
                    f"{tenant.slug!r}'s."
                )
