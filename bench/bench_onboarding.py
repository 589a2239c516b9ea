"""Onboarding one tenant: tenant-schema, django-tenants and the floor, interleaved.

Each round creates one tenant with every variant, in a rotating order, and
every tenant is removed again (untimed) before the next: tenant-schema's
``register_tenant`` on each server; the same on a server with a warm pool
(``?pool=2``, refilled by ``fill_pool`` before each sign-up, untimed);
django-tenants' ``Client(...).save()`` (``CREATE SCHEMA``, then
``migrate_schemas`` for the new schema: its default) plus its ``Domain``
row; and the floor of each server. The floor builds the same schema (the
tenant app's tables, ``django_migrations`` and its rows; DDL collected
once from Django's schema editor) through the driver itself: SQLite,
create the file and run it all in one transaction; PostgreSQL databases,
``CREATE DATABASE`` on a connection kept open, then one transaction on a
new connection to it, or (the other raw way, the faster of the two
counts) ``CREATE DATABASE ... TEMPLATE`` of a database built once that
way; PostgreSQL schemas, one transaction on a connection
kept open: ``CREATE SCHEMA``, ``SET LOCAL search_path``, the DDL and rows;
MariaDB, ``CREATE DATABASE``, ``USE`` and the DDL on a connection kept open
(MariaDB commits every DDL statement, so no transaction can hold them).
"""

from __future__ import annotations

import argparse

from _harness import Run, WorkerError, fmt_load, loadavg, mysql_reachable, pg_reachable
from _report import Section, Target, med, ms, ratio, table

NAME = "onboarding"
AFTERWORD = """
Beyond the floor's work, `register_tenant` writes the registry row and
commits it before it starts (a crash leaves a row that is visibly not
ready), takes the row's lock, asks the server whether the database exists,
creates it, writes the ownership marker (one small table and a row), builds
the tables from the models, and marks the row ready as the last write of
the registry transaction. On PostgreSQL schemas it also opens a new
connection for the tenant, whose `search_path` is set when the connection
starts, where the floor reuses an open one. django-tenants replays the
tenant app's migrations in every new schema: `migrate_schemas` runs
Django's whole `migrate` command per tenant (migration loader, graph, plan,
project state, `post_migrate` handlers). A warm pool moves the database and
its tables out of the sign-up: `register_tenant` claims a pooled database
in one registry statement, and `fill_pool` (from cron or a task queue)
makes the next ones.
"""

TS = [  # label, server, floor
    ("SQLite", "sqlite", "sqlite"),
    ("PostgreSQL, database", "pg", "pg"),
    ("PostgreSQL, schema", "pgschema", "pgschema"),
    ("MariaDB, database", "mysql", "mysql"),
]
POOLS = [
    ("SQLite", "sqlitepool", "sqlite"),
    ("PostgreSQL, database", "pgpool", "pg"),
    ("PostgreSQL, schema", "pgschemapool", "pgschema"),
    ("MariaDB, database", "mysqlpool", "mysql"),
]
#: Each server's floors: (key, method, how). The fastest one is the floor of the table.
FLOORS = {
    "sqlite": [("sqlite", "ddl", "file + DDL and rows in one transaction")],
    "pg": [
        ("pg", "ddl", "`CREATE DATABASE`, then DDL and rows in one transaction"),
        ("pg_clone", "clone", "`CREATE DATABASE ... TEMPLATE` of a database built that way"),
    ],
    "pgschema": [("pgschema", "ddl", "`CREATE SCHEMA`, DDL and rows in one transaction")],
    "mysql": [("mysql", "ddl", "`CREATE DATABASE`, `USE`, DDL and rows")],
}


def run(bench: Run, argv: list[str]) -> Section:
    parser = argparse.ArgumentParser(prog="bench onboarding")
    parser.add_argument("--tenants", type=int, default=3 if bench.quick else 20, help="tenants per variant")
    args, _ = parser.parse_known_args(argv)
    load_start = loadavg()
    pg, mysql = pg_reachable(), mysql_reachable()
    if pg:
        bench.ensure_schema_database()
    ts = bench.ts_worker(3, name="onboarding")
    dt = bench.dt_worker(3, name="onboarding") if pg else None
    pool = ts.info.get("pool")

    variants = []  # (key, call)
    for _, server, fl in TS:
        if server.startswith("pg") and not pg or server == "mysql" and not mysql:
            continue
        variants.append((("ts", server), lambda s=server: ts.call("onboard", server=s, count=1)))
        for key, method, _ in FLOORS[fl]:
            call = lambda s=fl, m=method: ts.call("floor", server=s, count=1, method=m)  # noqa: E731
            variants.append((("floor", key), call))
    if pool:
        for _, server, _ in POOLS:
            if server.startswith("pg") and not pg or server.startswith("mysql") and not mysql:
                continue
            variants.append((("pool", server), lambda s=server: ts.call("onboard_pool", server=s, count=1)))
    if dt is not None:
        variants.append((("dt", "pgschema"), lambda: dt.call("onboard", count=1)))
    variants.append((("registry", "commit"), lambda: ts.call("registry_commit", count=1)))

    samples: dict[tuple[str, str], list[float]] = {key: [] for key, _ in variants}
    for _, call in variants:  # warm-up: connections, imports, the migration plan, the floor's statements
        call()
    for i in range(args.tenants):
        shift = i % len(variants)
        for key, call in variants[shift:] + variants[:shift]:
            samples[key] += call()
    if pool:
        for _, server, _ in POOLS:
            if ("pool", server) not in samples:
                continue
            try:
                ts.call("drain_pool", server=server)
            except WorkerError:
                pass  # the run's clean-up drops the databases anyway
    ts.close()
    if dt is not None:
        dt.close()
    load_end = loadavg()

    def fastest_floor(server: str) -> float:
        return min(med(samples[("floor", key)]) for key, _, _ in FLOORS[server])

    def row(variant: str, label: str, key, floor_server) -> list[str]:
        if key not in samples:
            return [variant, label, "not measured", "", ""]
        value, floor = med(samples[key]), fastest_floor(floor_server)
        return [variant, label, ms(value), ms(floor), ratio(value, floor)]

    rows = []
    for label, server, fl in TS:
        rows.append(row("tenant-schema `register_tenant`", label, ("ts", server), fl))
    for label, server, fl in POOLS:
        if pool:
            rows.append(row("tenant-schema, warm pool (`?pool=2`)", label, ("pool", server), fl))
        else:
            rows.append(["tenant-schema, warm pool", label, "not available", "", ""])
    rows.append(row("django-tenants `Client.save()` + `Domain`", "PostgreSQL, schema", ("dt", "pgschema"), "pgschema"))
    headers = ["variant", "server, isolation", "median (ms)", "floor (ms)", "vs floor"]
    text = table(headers, rows)
    floor_rows = [
        [label, how, ms(med(samples[("floor", key)]))]
        for label, _, fl in TS
        for key, _, how in FLOORS[fl]
        if ("floor", key) in samples
    ]
    floors = table(["server, isolation", "floor: the driver itself", "median (ms)"], floor_rows)
    text += "\n\nThe floors (the fastest of a server's is the table's):\n\n" + floors
    notes = []
    if ("dt", "pgschema") in samples and ("ts", "pgschema") in samples:
        dt_ms, ts_ms = med(samples[("dt", "pgschema")]), med(samples[("ts", "pgschema")])
        notes.append(
            f"On PostgreSQL schemas, django-tenants takes {dt_ms / ts_ms:.1f}x as long as `register_tenant` "
            f"({ms(dt_ms)} ms vs {ms(ts_ms)} ms)."
        )
        if pool and ("pool", "pgschemapool") in samples:
            notes.append(
                f"With a warm pool a sign-up takes {ms(med(samples[('pool', 'pgschemapool')]))} ms on schemas "
                f"and {ms(med(samples[('pool', 'pgpool')]))} ms on databases: the database was made beforehand "
                "(`fill_pool`, untimed here), so the floor no longer bounds it."
            )
    if ("registry", "commit") in samples:
        commit = med(samples[("registry", "commit")])
        bookkeeping = [
            f"{label} {ratio(med(samples[('ts', server)]), fastest_floor(fl) + 2 * commit)}"
            for label, server, fl in TS
            if ("ts", server) in samples
        ]
        notes.append(
            "Crash safety costs two registry commits per sign-up (the row before the database exists, its "
            "`ready` status after; `tests/test_onboarding_cost.py` counts them, and every statement): one "
            f"commit on this run's registry (a SQLite file) took {ms(commit)} ms, measured in the same rounds. "
            "Against the floor plus those two commits, `register_tenant` takes: " + ", ".join(bookkeeping) + "."
        )
    body = (
        f"Median of {args.tenants} tenants per variant, interleaved (one of each per round, rotating order); "
        f"load average (1/5/15 min) {fmt_load(load_start)} at the start, {fmt_load(load_end)} at the end.\n\n"
        + text
        + ("\n\n" + " ".join(notes) if notes else "")
    )
    print(f"Onboarding: median of {args.tenants} per variant (ms); load {fmt_load(load_start)} -> {fmt_load(load_end)}")
    print(text)
    for note in notes:
        print(note)
    return Section(NAME, "Onboarding", body, targets=_targets(samples, fastest_floor), load=(load_start, load_end))


def _targets(samples, fastest_floor) -> list[Target]:
    """Issue 9's onboarding targets, from this run's medians."""
    out: list[Target] = []
    for label, server, fl, goal in (
        ("PostgreSQL, database", "pgpool", "pg", 0.1),
        ("MariaDB", "mysqlpool", "mysql", 0.3),
    ):
        if ("pool", server) in samples:
            value = med(samples[("pool", server)]) / fastest_floor(fl)
            out.append(Target(f"warm-pool sign-up vs floor, {label}", f"≤ {goal}x", f"{value:.2f}x", value <= goal))
    for label, server, fl in TS:
        if ("ts", server) in samples:
            value = med(samples[("ts", server)]) / fastest_floor(fl)
            out.append(Target(f"sign-up without a pool vs floor, {label}", "≤ 1.3x", f"{value:.2f}x", value <= 1.3))
    if ("dt", "pgschema") in samples:
        dt_ms = med(samples[("dt", "pgschema")])
        for label, server, _ in POOLS:
            if ("pool", server) in samples:
                times = dt_ms / med(samples[("pool", server)])
                out.append(
                    Target(
                        f"warm-pool sign-up vs django-tenants creating a tenant, {label}",
                        "≥ 5x faster",
                        f"{times:.0f}x faster",
                        times >= 5,
                    )
                )
    return out
