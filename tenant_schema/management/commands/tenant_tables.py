"""``tenant_tables <slug>``: a tenant's tables and indexes, read from its database."""

from __future__ import annotations

import json

from django.core.management.base import BaseCommand, CommandError
from django.template.defaultfilters import pluralize

from ...names import normalize_slug
from ..inspection import command_errors, tables_and_indexes


class Command(BaseCommand):
    help = "Show a tenant's tables and their indexes, live from its database."

    def add_arguments(self, parser):
        parser.add_argument("slug")
        parser.add_argument("--json", action="store_true", help="Print the tenant and its tables as a JSON object.")

    def handle(self, *args, slug, **options):
        from ...registry import get_tenant

        with command_errors():
            slug = normalize_slug(slug)
            tenant = get_tenant(slug)
            tables = tables_and_indexes(tenant)
            tenant.database.close()
        if tables is None:
            raise CommandError(
                f"tenant {slug!r} ({tenant.status}) has no database {tenant.database_name!r} "
                f"on server {tenant.server!r}; run tenant_register {slug} to create it"
            )
        if options["json"]:
            self.stdout.write(json.dumps(as_dict(tenant, tables), indent=2))
            return
        self.stdout.write(
            f"{slug}: {len(tables)} table{pluralize(len(tables))} on {tenant.server!r} ({tenant.dialect_name})"
        )
        for table, indexes in tables.items():
            self.stdout.write(f"  {table}")
            for index in indexes:
                unique = " unique" if index.unique else ""
                self.stdout.write(f"    {index.name} ({', '.join(index.columns)}){unique}")


def as_dict(tenant, tables: dict) -> dict:
    """The ``--json`` shape (docs/operations.md, "JSON output")."""
    return {
        "slug": tenant.slug,
        "status": tenant.status,
        "server": tenant.server,
        "dialect": tenant.dialect_name,
        "database": tenant.database_name,
        "tables": [
            {
                "name": table,
                "indexes": [{"name": i.name, "columns": list(i.columns), "unique": i.unique} for i in indexes],
            }
            for table, indexes in tables.items()
        ],
    }
