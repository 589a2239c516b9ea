"""``tenant_import FILE [--slug NEW] [--server KEY]``: a new tenant from an export; ``--cleanup`` alone drops
what interrupted imports left.

``lifecycle.exchange.import_tenant`` does the work: checks before anything
is created, a new database filled and verified table by table, and the
tenant registered (ready) only once all of that is done.
"""

from __future__ import annotations

import json

from django.core.management.base import BaseCommand, CommandError

from ..copying import add_copy_options, checked_lines, copying, rows_per_batch
from ..inspection import add_label_option, command_errors


class Command(BaseCommand):
    help = (
        "Create a new tenant from FILE, an export of tenant_export: a fresh uid, a new database on --server (else "
        "where the placement policy puts a new tenant), every table verified (rows and checksum) before the tenant "
        "exists. --cleanup alone drops what interrupted imports left."
    )

    def add_arguments(self, parser):
        parser.add_argument("file", nargs="?", metavar="FILE")
        parser.add_argument("--slug", default=None, help="The new tenant's slug (default: the exported tenant's).")
        parser.add_argument("--server", default=None, metavar="KEY", help="Key of the server to put the tenant on.")
        add_label_option(parser)
        parser.add_argument(
            "--cleanup", action="store_true", help="Instead of importing: drop what interrupted imports left."
        )
        add_copy_options(parser, tables=False)

    def handle(self, *args, file, slug, server, label, batch_size, cleanup, no_progress, **options):
        as_json = options["json"]
        if cleanup:
            if file is not None or slug is not None or server is not None or label or batch_size is not None:
                raise CommandError("--cleanup takes no FILE, --slug, --server, --label or --batch-size")
            self.cleanup(as_json)
            return
        if file is None:
            raise CommandError("name the export file to import (tenant_import FILE), or --cleanup")
        result = self.import_file(file, slug, server, ",".join(label), batch_size, progress=not no_progress)
        if as_json:
            self.stdout.write(json.dumps(result.as_dict(), indent=2))
            return
        self.report(result)

    def import_file(self, file, slug, server, labels, batch_size, *, progress: bool):
        from ...lifecycle.exchange import import_tenant

        with copying({"copy": "importing", "copied": "verifying"}, progress=progress, file=file) as bar:
            return import_tenant(
                file, slug=slug, server=server, labels=labels, batch_size=rows_per_batch(batch_size), progress=bar
            )

    def report(self, result) -> None:
        tenant, source = result.tenant, result.source
        self.stdout.write(
            f"Imported {result.file} as tenant {tenant.slug!r} on {tenant.server!r} ({tenant.database_name}), "
            f"from tenant {source.get('slug')!r} on {source.get('server')!r} ({source.get('dialect')}):"
        )
        for line in checked_lines(result.tables, "imported"):
            self.stdout.write(line)
        rows = sum(check.rows for check in result.tables)
        self.stdout.write(f"Tenant {tenant.slug!r} is ready: {rows} rows in {result.seconds:.1f} s.")

    def cleanup(self, as_json: bool) -> None:
        from ...lifecycle.exchange import drop_abandoned_imports
        from ...lifecycle.move import copy_dict

        with command_errors():
            dropped = drop_abandoned_imports()
        if as_json:
            self.stdout.write(json.dumps({"dropped": [copy_dict(row) for row in dropped]}, indent=2))
            return
        if not dropped:
            self.stdout.write("No interrupted import left anything behind.")
        for row in dropped:
            self.stdout.write(
                f"Dropped {row.slug!r} (database {row.database_name!r} on {row.server!r}), left by an interrupted "
                "import."
            )
