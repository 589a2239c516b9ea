"""The attack classes the suite runs, and the report ``./run reliability`` writes to docs/reliability.md.

Each class is a set of (test file, test-name pattern) rules; a test matching
a rule gets ``@pytest.mark.attack("<class>")``. ``pytest -m attack
--reliability-report FILE`` runs just those tests and writes the counts from
that run, per class and per server, to FILE.
"""

from __future__ import annotations

import datetime
import re
import subprocess
from collections import defaultdict
from pathlib import Path

ATTACKS: dict[str, tuple[str, list[tuple[str, str]]]] = {
    "hostile names": (
        "Tenant slugs, table, column, index and database names carrying SQL, quotes, NULs, newlines, "
        "path traversal or Django model internals: refused before any SQL, or quoted and working.",
        [
            ("test_names.py", ""),
            ("test_hostile_fields.py", "refused|hostile|clash|called_save|reserved|close_to"),
            ("test_connections.py", "validated|dialects_limit|outside_the_servers"),
        ],
    ),
    "injection through values and queries": (
        "Values, where-keys, lookups, order_by and Q objects that try to walk relations or reach "
        "other columns: bound parameters only, paths refused before any SQL.",
        [("test_hostile_fields.py", "where|order_by|q_holds"), ("test_tables.py", "where|order|unknown|invalid")],
    ),
    "cross-tenant access paths": (
        "Objects, querysets, bulk writes, relation managers, generators, async tasks, threads and raw "
        "SQL of one tenant used while another is selected.",
        [
            ("test_isolation.py", ""),
            ("test_isolation_paths.py", ""),
            ("test_credentials.py", "cross_tenant|isolated|attach|privileges|wildcards|own_tables"),
            ("test_routing.py", "cross|another|fail"),
        ],
    ),
    "foreign databases": (
        "A database already holding a tenant's name (another site, another application, a restored "
        "backup), reserved names and an empty prefix: refused, never used, changed or dropped.",
        [("test_ownership.py", "")],
    ),
    "crashes at each step": (
        "A process killed, or a DDL statement failing, at every step of registration, table and index "
        "creation, migration and a move to another server: never ready half-made, never switched to a "
        "half-copied database, and a re-run completes.",
        [
            ("test_provisioning.py", "crash|interrupted|failure|rerun|fails"),
            ("test_ddl.py", "when_any_statement_fails|interrupted|concurrent_creator"),
            ("test_ownership.py", "crash"),
            ("test_move.py", "killed|discards|mismatch|cannot_hold"),
        ],
    ),
    "concurrent registrants": (
        "Several processes, threads or async tasks registering or creating the same tenant or table at once.",
        [
            ("test_provisioning.py", "two_processes|concurrently"),
            ("test_servers.py", "two_processes"),
            ("test_connections.py", "concurrent"),
            ("test_credentials.py", "concurrent"),
        ],
    ),
    "dropped connections": (
        "The database server ending the connection before each statement of register_tables, "
        "registration, tenant_migrate and batch_create.",
        [("test_operations_safety.py", "dropped")],
    ),
    "operations that must not hang or leak": (
        "Purges with open transactions on the tenant, passwords in errors and checks, empty and unknown "
        "options, admin ids that are no tenant's, resolver exclusions.",
        [
            (
                "test_operations_safety.py",
                "purge|password|options|admin|resolver|subdomain|public_paths|exclusions|blanks|mask",
            )
        ],
    ),
}

SERVERS = ("sqlite", "pgschemaroles", "pgschema", "pgroles", "pg", "mysqlroles", "mysql", "crdb")


def classes_for(nodeid: str) -> list[str]:
    path, _, name = nodeid.partition("::")
    found = []
    for attack, (_, rules) in ATTACKS.items():
        for file, pattern in rules:
            if path.endswith(file) and re.search(pattern, name):
                found.append(attack)
                break
    return found


def server_of(nodeid: str) -> str:
    params = re.search(r"\[(.*)\]$", nodeid)
    if params:
        for part in re.split(r"[-,]", params.group(1)):
            if part in SERVERS:
                return part
    return "any"


class Report:
    def __init__(self) -> None:
        self.counts: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        self.servers: dict[str, set[str]] = defaultdict(set)

    def add(self, nodeid: str, outcome: str) -> None:
        for attack in classes_for(nodeid):
            self.counts[attack][outcome] += 1
            self.servers[attack].add(server_of(nodeid))

    def write(self, path: Path) -> None:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
        lines = [
            "# Reliability: the attacks the suite runs",
            "",
            "<!-- Generated by `./run reliability` (pytest -m attack --reliability-report=docs/reliability.md);",
            "     do not edit by hand: re-run it. -->",
            "",
            f"Counts from the last run ({datetime.date.today().isoformat()}, commit `{commit or '?'}`), live on the "
            "servers listed; each test also runs in the full suite (`./run test`). The rules that assign a "
            "test to a class are in `tests/reliability.py`.",
            "",
            "| attack class | what the tests do | passed | failed | skipped | servers |",
            "|---|---|---|---|---|---|",
        ]
        for attack, (description, _) in ATTACKS.items():
            c = self.counts.get(attack, {})
            servers = ", ".join(sorted(self.servers.get(attack, set()))) or "—"
            lines.append(
                f"| {attack} | {description} | {c.get('passed', 0)} | {c.get('failed', 0)} | "
                f"{c.get('skipped', 0)} | {servers} |"
            )
        total = {k: sum(c.get(k, 0) for c in self.counts.values()) for k in ("passed", "failed", "skipped")}
        lines += [
            "",
            f"Total: {total['passed']} passed, {total['failed']} failed, {total['skipped']} skipped "
            "(a test in two classes counts in both).",
            "",
        ]
        path.write_text("\n".join(lines))
