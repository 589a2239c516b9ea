"""``tenant_rekey [slug ...]``: give tenant roles the passwords derived from the current ``SECRET_KEY``.

Run it right after deploying a new ``SECRET_KEY`` (docs/isolation.md has the
whole rotation procedure). Every tenant on a server with ``tenant_roles``
(or only the given ones) gets its role's password set again; a tenant whose
role is missing but whose database exists gets the role created and granted.
A failing tenant does not stop the others; failures are listed at the end and
the command exits non-zero. Safe to re-run.
"""

from __future__ import annotations

import json

from django.core.exceptions import ImproperlyConfigured
from django.core.management.base import BaseCommand, CommandError
from django.template.defaultfilters import pluralize

from ..inspection import command_errors, one_line

REKEYED, CREATED, SKIPPED, FAILED = "rekeyed", "created", "skipped", "failed"


class Command(BaseCommand):
    help = (
        "Set the password of every tenant role (servers with ?tenant_roles=true) to the one derived "
        "from the current SECRET_KEY; run it after rotating SECRET_KEY. Creates a missing role."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "slugs", nargs="*", metavar="slug", help="Tenants to re-key (default: all on tenant_roles servers)."
        )
        parser.add_argument("--json", action="store_true", help="Print a JSON list of per-tenant results.")

    def handle(self, *args, slugs, verbosity: int = 1, **options):
        with command_errors():
            tenants = self.tenants(slugs)
        results = [self.rekey(tenant) for tenant in tenants]
        failures = [r for r in results if r["result"] == FAILED]
        if options["json"]:
            self.stdout.write(json.dumps(results, indent=2))
        else:
            self.report(results, verbosity)
        if failures:
            names = ", ".join(r["slug"] for r in failures)
            total = f"{len(results)} tenant{pluralize(len(results))}"
            raise CommandError(f"{len(failures)} of {total} could not be re-keyed: {names}")

    def tenants(self, slugs: list[str]) -> list:
        """The tenants to re-key; an explicit slug on a server without tenant roles is an error."""
        from ... import get_tenant
        from ...models import Tenant
        from ...servers import get_server

        if not slugs:
            out = []
            for tenant in Tenant.objects.order_by("slug"):
                try:
                    roles = get_server(tenant.server).tenant_roles
                except ImproperlyConfigured:  # an unknown or broken server
                    roles = True  # reported as this tenant's failure, not silently left out
                if roles:
                    out.append(tenant)
            return out
        tenants = [get_tenant(slug) for slug in dict.fromkeys(slugs)]
        for tenant in tenants:
            if not get_server(tenant.server).tenant_roles:
                raise CommandError(
                    f"tenant {tenant.slug!r} is on server {tenant.server!r}, which does not give tenants "
                    "their own roles (its URL has no tenant_roles=true): nothing to re-key"
                )
        return tenants

    def rekey(self, tenant) -> dict:
        from ... import credentials, ownership
        from ...servers import get_server

        row = {"slug": tenant.slug, "ok": False, "server": tenant.server, "role": None, "result": FAILED, "error": None}
        try:
            server = get_server(tenant.server)
            row["role"] = credentials.role_name(server, tenant.database_name)
            tenant_db = tenant.database
            exists = tenant_db.exists()
            if exists:
                try:  # never re-key or grant anything on a database that is not this tenant's
                    ownership.check_owner(tenant_db, tenant)
                finally:
                    tenant_db.close()
            try:
                credentials.rekey_tenant_role(server, tenant.database_name)
                row["result"] = REKEYED
            except credentials.MissingTenantRole:
                if exists:
                    credentials.ensure_tenant_role(server, tenant.database_name)
                    row["result"] = CREATED
                else:
                    row["result"] = SKIPPED
                    row["error"] = f"database {tenant.database_name!r} does not exist"
        except Exception as exc:  # noqa: BLE001 - reported per tenant, on one line
            row["result"], row["error"] = FAILED, one_line(exc)
        row["ok"] = row["result"] != FAILED
        return row

    def report(self, results: list[dict], verbosity: int) -> None:
        if not results:
            self.stdout.write("No tenants on servers with tenant_roles: nothing to re-key.")
            return
        for r in results:
            if r["result"] == FAILED:
                self.stderr.write(f"{r['slug']}: failed: {r['error']}")
            elif verbosity >= 1:
                detail = f": {r['error']}" if r["error"] else ""
                self.stdout.write(f"{r['slug']}: {r['result']} (role {r['role']} on {r['server']}){detail}")
        if verbosity >= 1:
            counts = {k: sum(1 for r in results if r["result"] == k) for k in (REKEYED, CREATED, SKIPPED, FAILED)}
            self.stdout.write(
                f"{len(results)} tenant{pluralize(len(results))}: {counts[REKEYED]} re-keyed, "
                f"{counts[CREATED]} roles created, {counts[SKIPPED]} skipped, {counts[FAILED]} failed."
            )
