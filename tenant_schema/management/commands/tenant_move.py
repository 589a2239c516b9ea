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
import sys

from django.core.management.base import BaseCommand, CommandError
from django.utils.module_loading import import_string

from ..inspection import command_errors


def table_spec(value: str) -> tuple:
    """``module.Class[:table[:pk]]`` as a ``register_tables`` spec."""
    path, *rest = value.split(":")
    if len(rest) > 2 or not path:
        raise CommandError(f"--table {value!r}: use module.Class, module.Class:table or module.Class:table:pk")
    try:
        cls = import_string(path)
    except ImportError as exc:
        raise CommandError(f"--table {value!r}: cannot import {path!r} ({exc})") from None
    return (cls, *[part or None for part in rest])


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
        parser.add_argument("--batch-size", type=int, default=None, metavar="N", help="Rows per batch (default 2000).")
        parser.add_argument(
            "--table",
            action="append",
            default=[],
            metavar="module.Class[:table[:pk]]",
            help="A table registered at run time that neither TENANT_TABLES nor this process knows (repeatable).",
        )
        parser.add_argument("--json", action="store_true", help="Print what was done as JSON.")
        parser.add_argument("--no-progress", action="store_true", help="No progress bar on stderr.")

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
        from ...lifecycle.move import DEFAULT_BATCH_SIZE, move_tenant

        bar = self.progress_bar() if progress else None
        try:
            with command_errors():
                result = move_tenant(
                    slug,
                    server,
                    batch_size=DEFAULT_BATCH_SIZE if batch_size is None else batch_size,
                    progress=bar,
                    drop_source=drop_source,
                    tables=specs,
                )
        finally:
            if bar is not None:
                bar.close()
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
        for check in result.tables:
            rows = f"{check.rows} row{'s' if check.rows != 1 else ''}"
            self.stdout.write(f"  {check.table}: {rows} copied, verified (checksum {check.checksum[:12]})")
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

    def progress_bar(self):
        """A callable for ``move_tenant(progress=...)`` driving a tqdm bar on stderr (and ``close()``)."""
        from tqdm import tqdm

        class Bar:
            def __init__(self) -> None:
                self.bar = None

            def __call__(self, step) -> None:
                if step.phase == "copy":
                    self.bar = tqdm(total=step.total, file=sys.stderr, unit="row", desc="copying")
                elif step.phase == "rows" and self.bar is not None:
                    self.bar.set_postfix_str(step.table, refresh=False)
                    self.bar.update(step.rows)
                elif step.phase == "copied" and self.bar is not None:
                    self.bar.set_description("verifying")

            def close(self) -> None:
                if self.bar is not None:
                    self.bar.close()

        return Bar()
