"""``tenant_export <slug> -o FILE``: write a tenant's schema description and rows to an export file.

The file is a ``tenant-schema-export`` (a ZIP of one JSON Lines member per
table and a manifest) that ``tenant_import`` turns into a new tenant, on
any engine; ``lifecycle.exchange.export_tenant`` does the work, reading the
tenant in one snapshot while it is served.
"""

from __future__ import annotations

import json

from django.core.management.base import BaseCommand

from ..copying import add_copy_options, checked_lines, copying, rows_per_batch, table_spec


class Command(BaseCommand):
    help = (
        "Export a tenant to FILE (tenant-schema-export: a ZIP of JSON Lines, one member per table, and a "
        "manifest describing its schema), read in one snapshot while it is served; tenant_import makes a new "
        "tenant of it, on any engine."
    )

    def add_arguments(self, parser):
        parser.add_argument("slug")
        parser.add_argument("-o", "--output", required=True, metavar="FILE", help="The file to write (replaced).")
        add_copy_options(parser)

    def handle(self, *args, slug, output, table, no_progress, **options):
        from ...lifecycle.exchange import export_tenant

        specs = [table_spec(value) for value in table]
        with copying({"export": "exporting"}, progress=not no_progress, file=output) as bar:
            result = export_tenant(
                slug, output, batch_size=rows_per_batch(options["batch_size"]), progress=bar, tables=specs
            )
        if options["json"]:
            self.stdout.write(json.dumps(result.as_dict(), indent=2))
            return
        self.report(result)

    def report(self, result) -> None:
        data = result.as_dict()
        size = "" if result.size is None else f", {result.size} bytes"
        self.stdout.write(
            f"Exported tenant {result.tenant.slug!r} to {result.file} ({data['format']} version {data['version']}"
            f"{size}):"
        )
        for line in checked_lines(result.tables):
            self.stdout.write(line)
        self.stdout.write(f"{len(result.tables)} tables, {data['rows']} rows in {result.seconds:.1f} s.")
