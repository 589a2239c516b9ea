"""``tenant_dialects``: which dialect plugins are installed, and from where."""

from __future__ import annotations

import json

from django.core.management.base import BaseCommand

from ...plugins import get_plugins
from ..inspection import command_errors, table_lines


class Command(BaseCommand):
    help = "List the installed dialect plugins: URL schemes, plugin and the distribution it comes from."

    def add_arguments(self, parser):
        parser.add_argument("--json", action="store_true", help="Print a JSON list of objects instead of a table.")

    def handle(self, *args, **options):
        with command_errors():
            state = get_plugins()
        rows = []
        for name in sorted(state.dialects):
            plugin = state.dialect_plugins.get(name, "?")
            dist, version = state.distributions.get(plugin, ("?", ""))
            rows.append(
                {
                    "dialect": name,
                    "schemes": list(state.dialects[name].schemes),
                    "plugin": plugin,
                    "distribution": dist,
                    "version": version,
                }
            )
        if options["json"]:
            self.stdout.write(json.dumps(rows, indent=2))
            return
        lines = table_lines(
            ("dialect", "schemes", "plugin", "distribution"),
            [
                (r["dialect"], ", ".join(r["schemes"]), r["plugin"], f"{r['distribution']} {r['version']}".strip())
                for r in rows
            ],
        )
        for line in lines:
            self.stdout.write(line)
