"""``tenant_servers``: each configured server, its tenants, its warm pool, and whether it answers.

The tenant counts come from one registry query; each server is then asked
``SELECT 1`` on its server-level connection (SQLite: its directory exists
and is writable), each check bounded by ``--timeout`` seconds, so one
server that does not answer never hides the others.
"""

from __future__ import annotations

import json
import os
import threading
import time

from django.core.management.base import BaseCommand, CommandError
from django.db import connections
from django.db.models import Count

from ...models import Tenant
from ...servers import Server, get_server, server_urls
from ..inspection import command_errors, one_line, table_lines

COLUMNS = ("server", "dialect", "isolation", "labels", "weight", "tenants", "pool", "reachable")


def reachability(server: Server) -> str | None:
    """``None`` when the server answers, else why not (one line, never a password)."""
    try:
        if server.dialect.name == "sqlite":  # its directory, or the one it will be made in on first use
            path = server.path
            while not path.exists() and path != path.parent:
                path = path.parent
            if not path.is_dir() or not os.access(path, os.W_OK):
                return f"directory {str(server.path)!r} cannot be written ({str(path)!r} is not a writable directory)"
            return None
        connection = server.connection()
        try:
            with connection.cursor() as cursor:
                cursor.execute("SELECT 1")
        finally:
            connection.close()
            connections[server.alias].close()
        return None
    except Exception as exc:  # noqa: BLE001 - reported per server, as the listing's point
        return one_line(exc)


class Command(BaseCommand):
    help = (
        "List the configured tenant servers: dialect, isolation, labels and weight (from the URL), "
        "how many tenants each holds (by status), its warm pool (ready/target) and whether it answers."
    )

    def add_arguments(self, parser):
        parser.add_argument("--json", action="store_true", help="Print a JSON list of objects instead of a table.")
        parser.add_argument(
            "--timeout", type=float, default=10.0, help="Seconds to wait for each server's answer (default 10)."
        )

    def handle(self, *args, **options):
        timeout = options["timeout"]
        if not timeout > 0:
            raise CommandError(f"--timeout must be a positive number of seconds, not {timeout}")
        with command_errors():
            servers = [get_server(key) for key in sorted(server_urls())]
            counts: dict[str, dict[str, int]] = {}
            for row in Tenant.objects.values("server", "status").annotate(n=Count("pk")):
                counts.setdefault(row["server"], {})[row["status"]] = row["n"]
        checked = self.probe(servers, timeout)
        rows = [self.row(server, counts.get(server.key, {}), problem) for server, problem in checked]
        configured = {server.key for server in servers}
        for key in sorted(set(counts) - configured):  # rows left pointing at a removed server
            n = sum(counts[key].values())
            self.stderr.write(f"{n} tenant{'s' if n != 1 else ''} on server {key!r}, which is not configured")
        if options["json"]:
            self.stdout.write(json.dumps(rows, indent=2))
            return
        for line in table_lines(COLUMNS, [self.cells(r) for r in rows]):
            self.stdout.write(line)
        for r in rows:
            if not r["reachable"]:
                self.stderr.write(f"{r['server']}: {r['problem']}")

    @staticmethod
    def probe(servers: list[Server], timeout: float) -> list[tuple[Server, str | None]]:
        """Each server with why it does not answer (``None`` when it does), all checked at once.

        One daemon thread per server and one deadline for all: a server that
        never answers costs ``timeout`` once, and never keeps the command
        from exiting.
        """
        results: dict[str, str | None] = {}

        def run(server: Server) -> None:
            results[server.key] = reachability(server)

        threads = [threading.Thread(target=run, args=(s,), daemon=True, name=f"probe-{s.key}") for s in servers]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + timeout
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        return [(s, results[s.key] if s.key in results else f"no answer within {timeout:g} s") for s in servers]

    @staticmethod
    def row(server: Server, by_status: dict[str, int], problem: str | None) -> dict:
        pooled = by_status.get(Tenant.Status.POOLED, 0)
        tenants = {status: n for status, n in sorted(by_status.items()) if status != Tenant.Status.POOLED}
        return {
            "server": server.key,
            "url": server.safe_url(),
            "dialect": server.dialect.name,
            "isolation": server.isolation,
            "labels": server.labels,
            "weight": server.weight,
            "tenants": sum(tenants.values()),
            "by_status": tenants,
            "pool": {"target": server.pool, "pooled": pooled},
            "reachable": problem is None,
            "problem": problem,
        }

    @staticmethod
    def cells(row: dict) -> list[object]:
        labels = ",".join(f"{k}={v}" for k, v in sorted(row["labels"].items())) or None
        pool = f"{row['pool']['pooled']}/{row['pool']['target']}" if row["pool"]["target"] else None
        return [
            row["server"],
            row["dialect"],
            row["isolation"],
            labels,
            row["weight"],
            row["tenants"],
            pool,
            "yes" if row["reachable"] else "no",
        ]
