"""``tenant_rebalance [--dry-run] [--max-moves N] [--json]``: even out the servers by moving tenants.

The plan comes from the registry alone (``lifecycle.rebalance.plan_rebalance``:
each open server's share by the placement policy, labels respected, the
newest ready tenants first); without ``--dry-run`` the moves run one by
one with ``move_tenant``'s guarantees, stopping at the first failure.
"""

from __future__ import annotations

import json

from django.core.management.base import BaseCommand, CommandError

from ...lifecycle.rebalance import live_counts, plan_rebalance, rebalance
from ..inspection import command_errors


class Command(BaseCommand):
    help = (
        "Even out the servers: plan the moves that bring each open server (weight above 0) to its share of "
        "the tenants under the placement policy, never out of a server's labels, and run them one by one "
        "(each tenant's writes paused while it is copied, the copy verified, the source kept)."
    )

    def add_arguments(self, parser):
        parser.add_argument("--dry-run", action="store_true", help="Print the plan; move nothing.")
        parser.add_argument("--max-moves", type=int, default=None, metavar="N", help="Plan at most N moves.")
        parser.add_argument(
            "--drop-source", action="store_true", help="Drop each moved tenant's source once its move is done."
        )
        parser.add_argument("--json", action="store_true", help="Print the plan (and what was moved) as JSON.")

    def handle(self, *args, dry_run, max_moves, drop_source, **options):
        as_json = options["json"]
        if max_moves is not None and max_moves < 0:
            raise CommandError(f"--max-moves must be 0 or more, not {max_moves}")
        with command_errors():
            plan = plan_rebalance(max_moves=max_moves)
        planned = [{"tenant": m.slug, "from": m.source, "to": m.target} for m in plan]
        if dry_run or not plan:
            if as_json:
                self.stdout.write(json.dumps({"dry_run": dry_run, "moves": planned, "load": live_counts()}, indent=2))
            elif not plan:
                self.stdout.write("The servers are even: nothing to move.")
            else:
                for move in plan:
                    self.stdout.write(f"{move.slug}: {move.source} -> {move.target}")
                self.stdout.write(f"{len(plan)} move{'s' if len(plan) != 1 else ''} planned (dry run: nothing moved).")
            return
        done = []

        def report(move, result):
            rows = sum(t.rows for t in result.tables)
            done.append({**planned[len(done)], "rows": rows, "seconds": round(result.seconds, 3)})
            if not as_json:
                self.stdout.write(f"{move.slug}: {move.source} -> {move.target}, {rows} rows in {result.seconds:.1f} s")

        try:
            with command_errors():
                rebalance(plan, on_move=report, drop_source=drop_source)
        except CommandError as exc:
            moved = f" after {len(done)} of {len(plan)} moves" if done else ""
            raise CommandError(f"rebalance stopped{moved}: {exc}") from None
        if as_json:
            self.stdout.write(json.dumps({"dry_run": False, "moves": done, "load": live_counts()}, indent=2))
        else:
            kept = "each source dropped" if drop_source else "each source kept as a copy (tenant_move --drop-source)"
            self.stdout.write(f"{len(done)} move{'s' if len(done) != 1 else ''} done; {kept}.")
