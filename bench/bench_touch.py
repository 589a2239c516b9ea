"""Touching many tenants from one process: one query in each, and the memory it leaves behind.

A fresh worker process warms up on one tenant, then runs one query
(``Note.objects.count()``) in each of the next N tenants of a fleet and
reports the time and the growth of its resident set (after ``gc.collect()``):

- django-tenants: one connection, ``connection.set_tenant(tenant)`` (its
  ``SET search_path`` runs before the query);
- tenant-schema: ``with tenant_context(tenant):`` — each tenant has its own
  alias and connection; at most ``MAX_OPEN_CONNECTIONS`` (20 here) stay
  open, the least recently used are closed.

The tenant rows are loaded beforehand, in one query, on both sides.
Rounds alternate between the variants, a new process each time; medians.
"""

from __future__ import annotations

import argparse

from _harness import Run, fmt_load, grow_fleets, loadavg, pg_reachable
from _report import Section, Target, med, table

NAME = "touch"
AFTERWORD = """
A tenant-schema tenant has its own alias and, once used, its own
connection: on PostgreSQL databases there is no other way to reach another
database, and on schemas the `search_path` is a startup parameter of the
connection (so no pooler can hand a session with another tenant's path to
someone else). Touching a tenant that is not open therefore costs a connect;
django-tenants switches `search_path` on the one connection it has. The
connections above the cap are closed, so the memory left behind is the
aliases' settings and the cached tenant rows, not open connections.
"""
VARIANTS = [
    ("tenant-schema `tenant_context`", "SQLite", "sqlite"),
    ("tenant-schema `tenant_context`", "PostgreSQL, database", "pg"),
    ("tenant-schema `tenant_context`", "PostgreSQL, schema", "pgschema"),
    ("django-tenants `connection.set_tenant`", "PostgreSQL, schema (one connection)", "dt"),
]


def run(bench: Run, argv: list[str]) -> Section:
    parser = argparse.ArgumentParser(prog="bench touch")
    parser.add_argument("--tenants", type=int, default=10 if bench.quick else 500)
    parser.add_argument("--rounds", type=int, default=1 if bench.quick else 3)
    args, _ = parser.parse_known_args(argv)
    load_start = loadavg()
    pg = pg_reachable()
    if pg:
        bench.ensure_schema_database()
    variants = [v for v in VARIANTS if pg or v[2] == "sqlite"]
    version = bench.shared.get("fleet_version", 3)
    ts = bench.ts_worker(version, name="touch-setup")
    dt = bench.dt_worker(version, name="touch-setup") if pg else None
    created = grow_fleets(bench, ts, dt, {key: args.tenants + 1 for _, _, key in variants})
    ts.close()
    if dt is not None:
        dt.close()

    results: dict[str, list[dict]] = {key: [] for _, _, key in variants}
    for i in range(args.rounds):
        shift = i % len(variants)
        for _, _, key in variants[shift:] + variants[:shift]:
            if key == "dt":
                worker = bench.dt_worker(version, name="touch")
                results[key].append(worker.call("touch", count=args.tenants))
            else:
                worker = bench.ts_worker(version, name="touch")
                results[key].append(worker.call("touch", server=key, count=args.tenants))
            worker.close()
    load_end = loadavg()

    rows = []
    for side, label, key in variants:
        runs = results[key]
        seconds = med([r["seconds"] for r in runs])
        rows.append(
            [
                side,
                label,
                f"{seconds:.2f}",
                f"{seconds / args.tenants * 1000:.2f}",
                f"{med([r['rss_growth_mib'] for r in runs]):.1f}",
                str(runs[-1]["connections"]),
            ]
        )
    n = f"{args.tenants:,}"
    text = table(
        [
            "variant",
            "server, isolation",
            f"touch {n} tenants (s)",
            "per tenant (ms)",
            "RSS growth (MiB)",
            "connections open after",
        ],
        rows,
    )
    setup = ", ".join(f"{k} {v['tenants']} in {v['seconds']:.0f} s" for k, v in created.items()) or "none (reused)"
    body = (
        f"Median of {args.rounds} rounds, each variant in a new process; load average {fmt_load(load_start)} at the "
        f"start, {fmt_load(load_end)} at the end. Fleets grown for this (untimed): {setup}.\n\n" + text
    )
    print(f"Touch {n} tenants, one query each; load {fmt_load(load_start)} -> {fmt_load(load_end)}")
    print(text)
    targets = []
    seconds = {key: med([r["seconds"] for r in results[key]]) for _, _, key in variants}
    if "dt" in seconds and "pgschema" in seconds:
        value = seconds["pgschema"] / seconds["dt"]
        targets.append(Target(f"touch {n} schema tenants vs django-tenants", "≤ 1.5x", f"{value:.2f}x", value <= 1.5))
    return Section(NAME, f"Touching {n} tenants", body, targets=targets, load=(load_start, load_end))
