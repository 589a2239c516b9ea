"""One request routed by the tenancy layer vs the same view with no tenancy, on each side.

Both sides serve the same view body (count the tenant's notes: one query)
through Django's test client, with the same middleware (Django's project
template) and persistent connections (``conn_max_age=600`` /
``CONN_MAX_AGE=600``), so neither side pays a connect per request.

- tenant-schema: ``TenantMiddleware`` (subdomain resolver) and
  ``TenantRouter``, against the view naming the tenant's alias itself with
  no tenant middleware;
- django-tenants: ``TenantMainMiddleware`` (domain lookup in the public
  schema, then ``SET search_path`` before the view's query), against the
  view on a plain ``django.db.backends.postgresql`` connection whose
  ``search_path`` is the tenant's schema from the start.

Requests alternate between the two variants of a side (ABBA), each timed
on its own; the sides take turns in rounds. The table shows medians.
"""

from __future__ import annotations

import argparse

from _harness import Run, fmt_load, loadavg, pg_reachable
from _report import Section, Target, med, ratio, table, us

NAME = "routing"
AFTERWORD = """
Per request, tenant-schema's middleware resolves the slug from the host,
takes the ready tenant from its per-process cache (`ROUTING_CACHE_SECONDS`)
and sets a context variable; the router maps each query's model to the
tenant's alias. django-tenants' middleware looks the host up in its domain
table (a query in the public schema, on every request) and, with its
default settings, sends `SET search_path` before the view's first query:
three round trips to the server instead of one.
"""
TS = [("SQLite", "sqlite_keep"), ("PostgreSQL, database", "pg_keep"), ("PostgreSQL, schema", "pgschema_keep")]
TARGET = 1.10


def run(bench: Run, argv: list[str]) -> Section:
    parser = argparse.ArgumentParser(prog="bench routing")
    parser.add_argument("--requests", type=int, default=200 if bench.quick else 2000, help="per variant")
    parser.add_argument("--rounds", type=int, default=2 if bench.quick else 5)
    args, _ = parser.parse_known_args(argv)
    load_start = loadavg()
    pg = pg_reachable()
    if pg:
        bench.ensure_schema_database()
    ts = bench.ts_worker(3, name="routing")
    dt = bench.dt_worker(3, name="routing", BENCH_CONN_MAX_AGE="600") if pg else None
    per = max(1, args.requests // args.rounds)
    sides = [(label, (lambda s=server: ts.call("routing", server=s, requests=per))) for label, server in TS]
    if not pg:
        sides = sides[:1]
    if dt is not None:
        sides.append(("django-tenants", lambda: dt.call("routing", requests=per)))
    samples = {label: {"routed": [], "plain": []} for label, _ in sides}
    for _ in range(args.rounds):
        for label, call in sides:
            for variant, times in call().items():
                samples[label][variant] += times
    ts.call("routing_done")
    ts.close()
    if dt is not None:
        dt.close()
    load_end = loadavg()

    rows, targets = [], []
    for label, _ in sides:
        routed, plain = med(samples[label]["routed"]), med(samples[label]["plain"])
        if label == "django-tenants":
            rows.append(
                [
                    "django-tenants `TenantMainMiddleware`",
                    "PostgreSQL, schema",
                    us(routed),
                    us(plain),
                    ratio(routed, plain),
                ]
            )
        else:
            rows.append(
                ["tenant-schema `TenantMiddleware` + router", label, us(routed), us(plain), ratio(routed, plain)]
            )
            overhead = routed / plain
            goal = f"≤ {TARGET:.2f}x"
            targets.append(Target(f"routing overhead, {label}", goal, f"{overhead:.3f}x", overhead <= TARGET))
    n = args.rounds * per
    text = table(["variant", "server, isolation", "routed (µs)", "no tenancy (µs)", "ratio"], rows)
    body = (
        f"Median of {n:,} requests per variant, in {args.rounds} rounds; load average {fmt_load(load_start)} "
        f"at the start, {fmt_load(load_end)} at the end.\n\n" + text
    )
    print(f"Routing: median µs per request over {n} requests each; load {fmt_load(load_start)} -> {fmt_load(load_end)}")
    print(text)
    return Section(NAME, "Routing", body, targets, load=(load_start, load_end))
