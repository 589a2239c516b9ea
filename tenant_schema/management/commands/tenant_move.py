"""``tenant_move <slug> --to SERVER``: move a live tenant to another server; ``--drop-source`` drops what it kept.

The tenant's database is copied to a new database on the target server
(writes refused meanwhile, reads served), verified table by table, and the
registry switched to it; ``lifecycle.move.move_tenant`` does the work. The
source database is kept, recorded as a copy, until ``--drop-source``: with
``--to`` it is dropped right after the move, without ``--to`` the copies
earlier moves kept are dropped.
"""

from __future__ import annotations

import json

from django.core.management.base import BaseCommand, CommandError

from ..copying import add_copy_options, checked_lines, copying, rows_per_batch, table_spec
from ..inspection import command_errors


class Command(BaseCommand):
    help = (
        "Move a tenant to another server: its database is copied (writes refused, reads served meanwhile), "
        "verified table by table (rows and checksum) and the registry switched to the copy. The source is kept "
        "as a copy until --drop-source. Without --to, --drop-source drops the copies earlier moves kept."
    )

    def add_arguments(self, parser):
        parser.add_argument("slug")
        parser.add_argument("--to", dest="server", metavar="SERVER", help="Key of the server to move the tenant to.")
        parser.add_argument(
            "--drop-source",
            action="store_true",
            help="With --to: drop the source once the move is done. Alone: drop the copies earlier moves kept.",
        )
        add_copy_options(parser)

    def handle(self, *args, slug, server, drop_source, batch_size, table, no_progress, **options):
        as_json = options["json"]
        if server is None and not drop_source:
            raise CommandError("name the server to move to (--to SERVER), or --drop-source to drop kept copies")
        if server is None:
            if batch_size is not None or table:
                raise CommandError("--batch-size and --table go with --to")
            self.drop_copies(slug, as_json)
            return
        specs = [table_spec(value) for value in table]
        self.move(slug, server, drop_source, batch_size, specs, as_json, progress=not no_progress)

    def drop_copies(self, slug: str, as_json: bool) -> None:
        from ...lifecycle.move import copy_dict, drop_kept_copies

        with command_errors():
            dropped = drop_kept_copies(slug)
        if as_json:
            self.stdout.write(json.dumps({"tenant": slug, "dropped": [copy_dict(row) for row in dropped]}, indent=2))
            return
        if not dropped:
            self.stdout.write(f"Tenant {slug!r} has no kept copies: nothing dropped.")
        for row in dropped:
            self.stdout.write(f"Dropped kept copy {row.slug!r}: database {row.database_name!r} on {row.server!r}.")

    def move(self, slug, server, drop_source, batch_size, specs, as_json: bool, *, progress: bool) -> None:
        from ...lifecycle.move import move_tenant

        with copying({"copy": "copying", "copied": "verifying"}, progress=progress) as bar:
            result = move_tenant(
                slug,
                server,
                batch_size=rows_per_batch(batch_size),
                progress=bar,
                drop_source=drop_source,
                tables=specs,
            )
        if as_json:
            self.stdout.write(json.dumps(result.as_dict(), indent=2))
            return
        self.report(result)

    def report(self, result) -> None:
        slug = result.tenant.slug
        self.stdout.write(
            f"Moved tenant {slug!r} from {result.source[0]!r} ({result.source[1]}) "
            f"to {result.target[0]!r} ({result.target[1]}):"
        )
        for line in checked_lines(result.tables, "copied"):
            self.stdout.write(line)
        self.stdout.write(f"Writes were refused for {result.write_pause:.1f} s; the move took {result.seconds:.1f} s.")
        if result.kept is not None:
            self.stdout.write(
                f"The source database {result.kept.database_name!r} on {result.kept.server!r} is kept as "
                f"{result.kept.slug!r}; drop it with 'tenant_move {slug} --drop-source'."
            )
            if result.drop_error:
                self.stderr.write(f"It could not be dropped: {result.drop_error}")
        else:
            self.stdout.write(f"The source database {result.source[1]!r} on {result.source[0]!r} was dropped.")
