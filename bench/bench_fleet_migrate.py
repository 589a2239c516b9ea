"""Fleet migration with nothing to apply: migrate_tenants vs a MigrationExecutor per tenant.

``migrate_tenants`` compares each tenant's ``django_migrations`` rows
(one query) with the migrations on disk; the baseline is what a loop of
``manage.py migrate --database <alias>`` does: a full MigrationExecutor
(loader, graph, plan, project state) per tenant. The baseline runs on a
sample of the fleet and is reported per tenant; only ratios matter.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _tenant_setup import reachable, setup_django, slug, table


def run(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="bench_fleet_migrate")
    parser.add_argument("--tenants", type=int, default=200)
    parser.add_argument("--sample", type=int, default=20, help="tenants migrated the naive way")
    parser.add_argument("--server", default="sqlite")
    parser.add_argument("--jobs", type=int, default=1)
    args = parser.parse_args(argv)
    setup_django()
    from django.core.management import call_command

    from tenant_schema.databases import close_tenant_connections
    from tenant_schema.provisioning import migrate_tenants, purge_tenant, register_tenant

    if not reachable(args.server):
        print(f"Fleet migration: server {args.server!r} unreachable, skipped")
        return
    slugs = [slug("fleet") for _ in range(args.tenants)]
    try:
        tenants = [register_tenant(s, server=args.server) for s in slugs]
        close_tenant_connections()
        start = time.perf_counter()
        report = migrate_tenants(slugs, jobs=args.jobs)
        ours = time.perf_counter() - start
        assert report.ok and all(r.skipped for r in report.results)

        sample = tenants[: args.sample]
        start = time.perf_counter()
        for tenant in sample:
            tenant.database.ensure_alias()
            call_command("migrate", database=tenant.database.alias, verbosity=0)
            tenant.database.close()
        naive_each = (time.perf_counter() - start) / len(sample)
    finally:
        for s in slugs:
            try:
                purge_tenant(s)
            except Exception:  # noqa: BLE001 - never registered (an earlier failure)
                pass
    ours_each = ours / args.tenants
    print(f"Fleet migration, nothing to apply: {args.tenants} tenants on {args.server!r}, jobs={args.jobs}")
    print(
        table(
            ["method", "per tenant (ms)", f"{args.tenants} tenants (s)", "ratio"],
            [
                [
                    f"migrate_tenants(jobs={args.jobs}) (one query per tenant)",
                    f"{ours_each * 1000:.1f}",
                    f"{ours:.2f}",
                    "1.00x",
                ],
                [
                    f"migrate per tenant (MigrationExecutor; sample of {len(sample)})",
                    f"{naive_each * 1000:.1f}",
                    f"{naive_each * args.tenants:.2f} (extrapolated)",
                    f"{naive_each / ours_each:.1f}x",
                ],
            ],
        )
    )


if __name__ == "__main__":
    run(sys.argv[1:])
