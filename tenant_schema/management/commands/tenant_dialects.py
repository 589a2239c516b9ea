"""``tenant_dialects``: which dialect plugins are installed, and from where."""

from __future__ import annotations

from django.core.management.base import BaseCommand

from ...plugins import get_plugins
from ..inspection import command_errors, table_lines


class Command(BaseCommand):
    help = "List the installed dialect plugins: URL schemes, plugin and the distribution it comes from."

    def handle(self, *args, **options):
        with command_errors():
            state = get_plugins()
        rows = []
        for name in sorted(state.dialects):
            cls = state.dialects[name]
            plugin = state.dialect_plugins.get(name, "?")
            dist, version = state.distributions.get(plugin, ("?", ""))
            rows.append((name, ", ".join(cls.schemes), plugin, f"{dist} {version}".strip()))
        for line in table_lines(("dialect", "schemes", "plugin", "distribution"), rows):
            self.stdout.write(line)
