"""Fleet migrations: nothing to apply, and one ``AddField``, on tenant-schema and django-tenants.

The fleets are built first (untimed): tenant-schema's with
``register_tenant`` on each server, django-tenants' with its first tenant
saved the django-tenants way and the others given the same schema directly
(``django_tenants_side/worker.py``, ``fleet_create``). Then:

1. nothing to apply, at the small fleet size: ``migrate_tenants(<slugs>,
   jobs=1)`` and ``jobs=2`` against ``manage.py migrate_schemas --tenant``
   with the standard and the multiprocessing executor (two processes, the
   machine's two cores); several rounds, interleaved, median;
2. one ``AddField`` (``Note.pinned``, migration 0002) applied to the whole
   small fleet: ``jobs=1`` and django-tenants' standard executor, by
   processes started with the new models; then a second ``AddField``
   (``Note.archived``, 0003) for ``jobs=2`` and the multiprocessing
   executor;
3. the SQLite, PostgreSQL-schema and django-tenants fleets grown to the
   large size, and nothing to apply again, once each;
4. the SQLite fleet grown to the huge size (10,000), nothing to apply,
   once, counting the tenant connections opened.
"""

from __future__ import annotations

import argparse

from _harness import Run, fmt_load, grow_fleets, loadavg, mysql_reachable, pg_reachable
from _report import Section, Target, med, table

NAME = "fleet_migrate"
AFTERWORD = """
With nothing to apply, `migrate_tenants` compares each tenant's migration
fingerprint in the registry with the plan on disk and skips the tenants
that match without connecting to them; django-tenants runs Django's whole
`migrate` command in every schema (loader, consistency check, plan,
`post_migrate` handlers), so its time grows with the fleet at the cost of a
migration run per tenant, even when none applies. To apply a migration,
both run Django's migration executor per tenant; tenant-schema connects to
each tenant's own database (or, on schemas, opens a connection whose
`search_path` is the tenant's) and applies the whole plan in one
transaction where DDL rolls back; with `jobs=2` the tenants that need work
are migrated by the calling process and one worker process, side by side.
"""
SERVERS = [
    ("SQLite", "sqlite"),
    ("PostgreSQL, database", "pg"),
    ("PostgreSQL, schema", "pgschema"),
    ("MariaDB, database", "mysql"),
]
LARGE = ("sqlite", "pgschema", "dt")  # creating 1,000 PostgreSQL or MariaDB databases is too slow for this run


def run(bench: Run, argv: list[str]) -> Section:
    parser = argparse.ArgumentParser(prog="bench fleet_migrate")
    parser.add_argument("--small", type=int, default=8 if bench.quick else 200)
    parser.add_argument("--large", type=int, default=20 if bench.quick else 1000)
    parser.add_argument("--huge", type=int, default=40 if bench.quick else 10_000, help="SQLite only; 0: skip")
    parser.add_argument("--rounds", type=int, default=1 if bench.quick else 3, help="no-op runs at the small size")
    args, _ = parser.parse_known_args(argv)
    load_start = loadavg()
    pg, mysql = pg_reachable(), mysql_reachable()
    if pg:
        bench.ensure_schema_database()
    servers = [(label, key) for label, key in SERVERS if (pg or not key.startswith("pg")) and (mysql or key != "mysql")]
    keys = [key for _, key in servers] + (["dt"] if pg else [])
    if bench.shared.get("fleets"):
        raise RuntimeError("fleet_migrate builds its fleets at version 1 of the app: it must run first")

    # Results: (side, server, jobs/executor, size) -> [seconds]; checks collected as we go.
    noop: dict[tuple, list[float]] = {}
    addfield: dict[tuple, dict] = {}
    problems: list[str] = []

    def ts_migrate(ts, key, jobs, expect):
        result = ts.call("migrate", server=key, jobs=jobs)
        if result["failed"] or result[expect] != result["tenants"]:
            problems.append(f"tenant-schema {key} jobs={jobs}: {result}")
        return result

    def dt_migrate(dt, executor):
        result = dt.call("migrate", executor=executor)
        if result["at_latest"] != result["tenants"] or result["schemas"] != result["tenants"]:
            problems.append(f"django-tenants {executor}: {result}")
        return result

    def noop_round(ts, dt, size, only=None):
        calls = []
        for _, key in servers:
            if only is None or key in only:
                for jobs in (1, 2):
                    calls.append((("ts", key, jobs, size), lambda k=key, j=jobs: ts_migrate(ts, k, j, "skipped")))
        if dt is not None:
            for executor in ("standard", "multiprocessing"):
                calls.append((("dt", "pgschema", executor, size), lambda e=executor: dt_migrate(dt, e)))
        return calls

    # 1. fleets at version 1, nothing to apply
    ts = bench.ts_worker(1, name="fleet")
    dt = bench.dt_worker(1, name="fleet") if pg else None
    created = grow_fleets(bench, ts, dt, {key: args.small for key in keys})
    calls = noop_round(ts, dt, args.small)
    for i in range(args.rounds):
        shift = i % len(calls)
        for key, call in calls[shift:] + calls[:shift]:
            noop.setdefault(key, []).append(call()["seconds"])
    ts.close()
    if dt is not None:
        dt.close()

    # 2. one AddField, then another: processes started with the new models
    for version, jobs, executor in ((2, 1, "standard"), (3, 2, "multiprocessing")):
        ts = bench.ts_worker(version, name="fleet")
        dt = bench.dt_worker(version, name="fleet") if pg else None
        for _, key in servers:
            addfield[("ts", key, jobs)] = ts_migrate(ts, key, jobs, "applied")
        if dt is not None:
            addfield[("dt", "pgschema", executor)] = dt_migrate(dt, executor)
        if version == 2:
            ts.close()
            if dt is not None:
                dt.close()

    # 3. the large fleets (version 3 now), nothing to apply
    created_large = grow_fleets(bench, ts, dt, {key: args.large for key in LARGE if key in keys})
    for key, call in noop_round(ts, dt, args.large, only=LARGE):
        noop.setdefault(key, []).append(call()["seconds"])
    # 4. the huge SQLite fleet, nothing to apply, jobs=1 (the registry query and the comparison)
    huge = None
    if args.huge > args.large:
        created_large.update({f"{k} (huge)": v for k, v in grow_fleets(bench, ts, None, {"sqlite": args.huge}).items()})
        huge = ts_migrate(ts, "sqlite", 1, "skipped")
    ts.close()
    if dt is not None:
        dt.close()
    bench.shared["fleet_version"] = 3
    load_end = loadavg()

    # -- tables ---------------------------------------------------------------------------
    def cell(key, size):
        if key not in noop:
            return "—", "—"
        seconds = med(noop[key])
        return f"{seconds:.2f}", f"{seconds / size * 1000:.2f}"

    rows = []
    for label, key in servers:
        for jobs in (1, 2):
            small, large = (
                cell(("ts", key, jobs, args.small), args.small),
                cell(("ts", key, jobs, args.large), args.large),
            )
            rows.append([f"tenant-schema `migrate_tenants(jobs={jobs})`", label, *small, *large])
    if pg:
        for executor in ("standard", "multiprocessing"):
            small = cell(("dt", "pgschema", executor, args.small), args.small)
            large = cell(("dt", "pgschema", executor, args.large), args.large)
            rows.append(
                [f"django-tenants `migrate_schemas --tenant` ({executor})", "PostgreSQL, schema", *small, *large]
            )
    s, lg = f"{args.small:,}", f"{args.large:,}"
    huge_note = ""
    if huge is not None:
        huge_note = (
            f"\n\nNothing to apply on {huge['tenants']:,} SQLite tenants, `migrate_tenants(<slugs>, jobs=1)`: "
            f"{huge['seconds']:.2f} s ({huge['seconds'] / huge['tenants'] * 1000:.3f} ms per tenant), "
            f"{huge['connections']} tenant connections opened, {huge['registry_queries']} registry queries."
        )
    noop_table = table(
        ["method", "server, isolation", f"{s} tenants (s)", "per tenant (ms)", f"{lg} tenants (s)", "per tenant (ms)"],
        rows,
    )
    add_rows = []
    for label, key in servers:
        for jobs, migration in ((1, "0002"), (2, "0003")):
            r = addfield.get(("ts", key, jobs))
            if r:
                add_rows.append(
                    [
                        f"tenant-schema `migrate_tenants(jobs={jobs})`",
                        label,
                        migration,
                        f"{r['seconds']:.2f}",
                        f"{r['seconds'] / r['tenants'] * 1000:.1f}",
                    ]
                )
    for executor, migration in (("standard", "0002"), ("multiprocessing", "0003")):
        r = addfield.get(("dt", "pgschema", executor))
        if r:
            add_rows.append(
                [
                    f"django-tenants `migrate_schemas --tenant` ({executor})",
                    "PostgreSQL, schema",
                    migration,
                    f"{r['seconds']:.2f}",
                    f"{r['seconds'] / r['tenants'] * 1000:.1f}",
                ]
            )
    add_table = table(["method", "server, isolation", "migration", f"{s} tenants (s)", "per tenant (ms)"], add_rows)

    notes = []
    dt_small, dt_large = ("dt", "pgschema", "standard", args.small), ("dt", "pgschema", "standard", args.large)
    ts_large = ("ts", "pgschema", 1, args.large)
    if pg and dt_large in noop and ts_large in noop:
        d, t = med(noop[dt_large]), med(noop[ts_large])
        notes.append(
            f"With nothing to apply on {lg} PostgreSQL schemas, django-tenants' `migrate_schemas` (standard "
            f"executor) took {d:.1f} s and `migrate_tenants(jobs=1)` {t:.2f} s: {d / t:.0f}x as long."
        )
    if pg and dt_small in noop and dt_large in noop:
        per_small, per_large = med(noop[dt_small]) / args.small * 1000, med(noop[dt_large]) / args.large * 1000
        notes.append(
            f"django-tenants' cost per tenant went from {per_small:.1f} ms at {s} tenants to {per_large:.1f} ms "
            f"at {lg}."
        )
    if pg and ("dt", "pgschema", "standard") in addfield and ("ts", "pgschema", 1) in addfield:
        d, t = addfield[("dt", "pgschema", "standard")]["seconds"], addfield[("ts", "pgschema", 1)]["seconds"]
        notes.append(
            f"Applying one `AddField` to {s} schemas took django-tenants (standard executor) {d:.1f} s and "
            f"`migrate_tenants(jobs=1)` {t:.1f} s: tenant-schema took {t / d:.2f}x as long as django-tenants."
        )
    if pg and ("dt", "pgschema", "multiprocessing") in addfield and ("ts", "pgschema", 2) in addfield:
        d, t = addfield[("dt", "pgschema", "multiprocessing")]["seconds"], addfield[("ts", "pgschema", 2)]["seconds"]
        notes.append(
            f"With two processes: {d:.1f} s (multiprocessing executor) and {t:.1f} s (`jobs=2`), {t / d:.2f}x."
        )
    setup = ", ".join(f"{k} {v['tenants']} in {v['seconds']:.0f} s" for k, v in {**created, **created_large}.items())
    if problems:
        notes.append("**Checks failed:** " + "; ".join(problems))
    body = (
        f"Nothing to apply: median of {args.rounds} runs at {s} tenants (interleaved), one run at {lg}. "
        f"Load average {fmt_load(load_start)} at the start, {fmt_load(load_end)} at the end. "
        f"Fleet set-up (untimed): {setup}. Fleets of {lg} only on SQLite, PostgreSQL schemas and "
        f"django-tenants: creating {lg} PostgreSQL or MariaDB databases takes too long for this run.\n\n"
        + noop_table
        + huge_note
        + f"\n\nOne `AddField` applied to every tenant of the {s}-tenant fleets (one run each):\n\n"
        + add_table
        + ("\n\n" + " ".join(notes) if notes else "")
    )
    print(f"Fleet migration; load {fmt_load(load_start)} -> {fmt_load(load_end)}; set-up: {setup}")
    print(noop_table + huge_note)
    print()
    print(add_table)
    for note in notes:
        print(note)
    targets = []
    if pg and ("dt", "pgschema", "multiprocessing") in addfield and ("ts", "pgschema", 2) in addfield:
        d, t = addfield[("dt", "pgschema", "multiprocessing")]["seconds"], addfield[("ts", "pgschema", 2)]["seconds"]
        targets.append(
            Target(
                "one AddField over the schema fleet vs django-tenants multiprocessing",
                "≥ 2x faster",
                f"{d / t:.2f}x faster",
                d / t >= 2,
            )
        )
    return Section(NAME, "Fleet migration", body, targets=targets, load=(load_start, load_end))
