"""``tenant_maintenance <slug> on|off``: switch a tenant's maintenance mode.

While it is on the tenant is served for reads only: writes through the ORM
or the Table API raise ``TenantUnavailable`` and the middleware answers
write requests with a 503. ``lifecycle.archive.set_maintenance`` does the work.
"""

from __future__ import annotations

from django.core.management.base import BaseCommand

from ... import conf
from ...models import Tenant
from ..inspection import command_errors


class Command(BaseCommand):
    help = (
        "Switch maintenance mode of a tenant on or off. While it is on the tenant is served for reads; "
        "writes are refused (503 for POST, PUT, PATCH and DELETE requests). Other processes follow "
        "within ROUTING_CACHE_SECONDS."
    )

    def add_arguments(self, parser):
        parser.add_argument("slug")
        parser.add_argument("state", choices=["on", "off"], help="on: reads only; off: writes accepted again.")

    def handle(self, *args, slug, state, **options):
        from ...lifecycle.archive import set_maintenance
        from ...registry import get_tenant

        on = state == "on"
        with command_errors():
            before = get_tenant(slug)
            tenant = set_maintenance(before, on)
        already = "already " if before.maintenance == on else ""
        if on:
            line = (
                f"Tenant {tenant.slug!r} is {already}in maintenance mode: reads are served, writes are refused; "
                f"other processes follow within {conf.get('ROUTING_CACHE_SECONDS')} s (ROUTING_CACHE_SECONDS). "
                f"End it with 'tenant_maintenance {tenant.slug} off'."
            )
        else:
            line = f"Tenant {tenant.slug!r} is {already}out of maintenance mode: writes are accepted."
        if tenant.status != Tenant.Status.READY:
            line += f" (It is {tenant.status}, so not served at all.)"
        self.stdout.write(line)
