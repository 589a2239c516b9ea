"""``tenant_dialects``: which dialect plugins are installed, and from where."""

from __future__ import annotations

from django.core.management.base import BaseCommand

from ...plugins import get_plugins
from ..inspection import command_errors


class Command(BaseCommand):
    help = "List the installed dialect plugins: URL schemes, plugin and the distribution it comes from."

    def handle(self, *args, **options):
        with command_errors():
            state = get_plugins()
        rows = [("dialect", "schemes", "plugin", "distribution")]
        for name in sorted(state.dialects):
            cls = state.dialects[name]
            plugin = state.dialect_plugins.get(name, "?")
            dist, version = state.distributions.get(plugin, ("?", ""))
            rows.append((name, ", ".join(cls.schemes), plugin, f"{dist} {version}".strip()))
        widths = [max(len(row[i]) for row in rows) for i in range(4)]
        for row in rows:
            self.stdout.write("  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip())
