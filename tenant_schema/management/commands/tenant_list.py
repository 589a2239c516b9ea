"""``tenant_list``: every registered tenant, with live table counts.

Each tenant is visited once: its connection is closed and the alias the
visit added forgotten before the next, so listing 10,000 tenants holds one
tenant connection (and the servers' own) at a time, well inside
``MAX_OPEN_CONNECTIONS``.

A tenant in maintenance mode shows as ``ready+maintenance`` in the table,
and with ``"maintenance": true`` in the JSON.
"""

from __future__ import annotations

import json

from django.core.management.base import BaseCommand

from ...databases import admin_alias, close_tenant_connections, released, tenant_alias
from ...models import Tenant
from ..inspection import command_errors, table_count, table_lines

COLUMNS = ("slug", "status", "server", "dialect", "tables")


class Command(BaseCommand):
    help = (
        "List registered tenants: slug, status, server, dialect and how many tables "
        "their database holds right now ('-' when it does not exist or cannot be reached)."
    )

    def add_arguments(self, parser):
        parser.add_argument("--json", action="store_true", help="Print a JSON list of objects instead of a table.")
        parser.add_argument(
            "--pooled",
            action="store_true",
            help="Also list the warm pool's databases (slugs pool-<hex>; see tenant_pool).",
        )

    def handle(self, *args, **options):
        from ...lifecycle.pool import pool_rows

        tenants = Tenant.objects.order_by("slug")
        if not options["pooled"]:
            tenants = tenants.exclude(pk__in=pool_rows())
        with command_errors():
            rows = [self.row(tenant) for tenant in tenants]
        close_tenant_connections()
        if options["json"]:
            self.stdout.write(json.dumps(rows, indent=2))
            return
        if not rows:
            self.stdout.write("No tenants registered.")
            return
        shown = [{**r, "status": r["status"] + ("+maintenance" if r["maintenance"] else "")} for r in rows]
        for line in table_lines(COLUMNS, [[r[c] for c in COLUMNS] for r in shown]):
            self.stdout.write(line)

    @staticmethod
    def row(tenant: Tenant) -> dict:
        with released(tenant_alias(tenant.slug), admin_alias(tenant.slug)):
            tables = table_count(tenant)
        return {
            "slug": tenant.slug,
            "status": tenant.status,
            "maintenance": tenant.maintenance,
            "server": tenant.server,
            "dialect": tenant.dialect_name,
            "tables": tables,
        }
