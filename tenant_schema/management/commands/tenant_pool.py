"""``tenant_pool``: fill (or show, or drain) each server's warm pool of provisioned databases.

A server keeps a pool when its URL says ``?pool=N``. Run this from cron (or
a task queue) so sign-ups find a database ready: ``register_tenant`` then
takes one in a single registry transaction instead of creating it.
"""

from __future__ import annotations

import dataclasses
import json

from django.core.management.base import BaseCommand

from ..inspection import command_errors, table_lines

COLUMNS = ("server", "size", "ready", "stale", "unfinished")


class Command(BaseCommand):
    help = (
        "Fill every server's warm pool (servers whose URL has ?pool=N) with provisioned, unassigned "
        "databases; --status shows the pools, --drain drops the pooled databases."
    )

    def add_arguments(self, parser):
        parser.add_argument("--server", help="Only this server (default: every server with a pool).")
        group = parser.add_mutually_exclusive_group()
        group.add_argument("--status", action="store_true", help="Show each pool without changing it.")
        group.add_argument(
            "--drain",
            action="store_true",
            help="Drop every pooled (never claimed) database and its row, and the clone templates; "
            "tenants are not touched.",
        )
        parser.add_argument("--json", action="store_true", help="Print the pools as a JSON list of objects.")

    def handle(self, *args, server, status, drain, verbosity, **options):
        as_json = options["json"]
        from ...lifecycle.clone import drop_clone_templates
        from ...lifecycle.pool import drain_pool, fill_pool, pool_status

        with command_errors():
            if drain:
                count = drain_pool(server)
                templates = drop_clone_templates(server)
                if verbosity >= 1 and not as_json:
                    self.stdout.write(f"Dropped {count} pooled database(s) and {templates} clone template(s).")
            elif not status:
                count = fill_pool(server)
                if verbosity >= 1 and not as_json:
                    self.stdout.write(f"Provisioned {count} pooled database(s).")
            pools = [dataclasses.asdict(p) | {"missing": p.missing} for p in pool_status(server)]
        if as_json:
            self.stdout.write(json.dumps(pools, indent=2))
        elif status or verbosity >= 2:
            self.print_table(pools)

    def print_table(self, pools: list[dict]) -> None:
        if not pools:
            self.stdout.write("No server keeps a pool (add ?pool=N to a server URL).")
            return
        for line in table_lines(COLUMNS, [[p[c] for c in COLUMNS] for p in pools]):
            self.stdout.write(line)
