"""Moving a tenant to another server: throughput and the write pause, per pair of engines.

For each pair, a fresh tenant on the source server gets the benchmark
app's rows (accounts, transactions with a unique pair and a date index,
budgets, tags, notes with a foreign key; ``--rows`` in all, three quarters
of them transactions and notes), written with Django's ``bulk_create``
(untimed). Then ``move_tenant(slug, target, settle=0)`` runs, timed by
itself: the target built, the copy in keyset batches, the checksums of
both sides, the switch. Its writes are refused from the start of the copy
to the switch (the target is built before): that is the write pause,
reported per million rows. ``settle`` (the wait
before copying, so every process sees maintenance mode: by default
``ROUTING_CACHE_SECONDS`` + 1 s, whatever the size) is left out here and
added to the pause in production. The tenant and the copy the move kept
are dropped afterwards (untimed).
"""

from __future__ import annotations

import argparse

from _harness import Run, fmt_load, loadavg, mysql_reachable, pg_reachable
from _report import Section, table

NAME = "move"
AFTERWORD = """
A move reads every row of every table twice on each side (once to copy,
once for the checksum), normalising each value through its Django field so
that both engines hash alike, and writes each row once on the target with
the bulk path of `Table.batch_create`. The write pause is the copy and the
verification: reads are served all along, and the registry switch itself is
one transaction. A tenant's data is copied by one process, one batch after
the other; tenants move one at a time (`tenant_rebalance`).
"""
PAIRS = [  # label, source, target
    ("SQLite → PostgreSQL, database", "sqlite", "pg"),
    ("PostgreSQL, database → PostgreSQL, schema", "pg", "pgschema"),
    ("PostgreSQL, schema → MariaDB", "pgschema", "mysql"),
    ("MariaDB → SQLite", "mysql", "sqlite"),
]


def run(bench: Run, argv: list[str]) -> Section:
    parser = argparse.ArgumentParser(prog="bench move")
    parser.add_argument("--rows", type=int, default=2_000 if bench.quick else 200_000)
    args, _ = parser.parse_known_args(argv)
    load_start = loadavg()
    pg, mysql = pg_reachable(), mysql_reachable()
    if pg:
        bench.ensure_schema_database()
    version = bench.shared.get("fleet_version", 3)
    ts = bench.ts_worker(version, name="move")
    results = []
    for label, source, target in PAIRS:
        if not pg and "pg" in (source, target) or not mysql and "mysql" in (source, target):
            continue
        results.append((label, ts.call("move", source=source, target=target, rows=args.rows)))
    ts.close()
    load_end = loadavg()
    rows = []
    for label, r in results:
        per_million = r["write_pause"] / r["rows"] * 1_000_000
        rows.append(
            [
                label,
                f"{r['rows']:,}",
                f"{r['seconds']:.1f}",
                f"{r['rows'] / r['seconds']:,.0f}",
                f"{r['write_pause']:.1f}",
                f"{per_million:.0f}",
            ]
        )
    text = table(["move", "rows", "move (s)", "rows/s", "write pause (s)", "write pause per million rows (s)"], rows)
    body = (
        f"{args.rows:,} rows per tenant, one move per pair; load average {fmt_load(load_start)} at the start, "
        f"{fmt_load(load_end)} at the end.\n\n" + text
    )
    print(f"Moves; load {fmt_load(load_start)} -> {fmt_load(load_end)}")
    print(text)
    return Section(NAME, "Moving a tenant", body, load=(load_start, load_end))
