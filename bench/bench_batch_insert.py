"""Bulk insert: ``Table.batch_create`` against the driver's own ``executemany``.

Both insert the same rows (a personal-finance ``transactions`` table with a
foreign key, a decimal, a date, text and a nullable column) into an empty
table, in one transaction on the same connection, starting from the same
list of dicts. The baseline is the driver's plain cursor (psycopg 3
``Cursor``, mysqlclient, sqlite3) running ``executemany`` of one
parameterised INSERT; it includes turning the dicts into tuples, which the
driver needs. Django's own ``QuerySet.bulk_create`` of model instances is
timed too, for reference. Runs alternate; the table shows medians and the
throughput ratio (baseline time / batch_create time).

    ./run bench batch_insert -- --rows 100000 --repeat 5 --servers sqlite,pg,mysql
"""

from __future__ import annotations

import argparse
import datetime
import decimal
import operator
import statistics
import time
from dataclasses import dataclass, field
from typing import Optional

from _harness import Run, fmt_load, loadavg
from _report import Section, Target, table
from _tenant_setup import reachable, slug


@dataclass
class Account:
    name: str = field(metadata={"max_length": 100})
    id: Optional[int] = None


@dataclass
class Transaction:
    account: Account
    amount: decimal.Decimal = field(metadata={"max_digits": 12, "decimal_places": 2})
    description: str = field(metadata={"max_length": 200})
    category: str = field(metadata={"max_length": 40})
    booked_on: datetime.date
    note: Optional[str] = None
    id: Optional[int] = None


CATEGORIES = ["groceries", "rent", "salary", "transport", "eating out", "utilities"]


def make_rows(count: int, account_id: int) -> list[dict]:
    start = datetime.date(2024, 1, 1)
    return [
        {
            "account": account_id,
            "amount": decimal.Decimal(i % 20000 - 10000) / 100,
            "description": f"card payment #{i}",
            "category": CATEGORIES[i % len(CATEGORIES)],
            "booked_on": start + datetime.timedelta(days=i % 730),
            "note": None if i % 4 else f"note {i}",
        }
        for i in range(count)
    ]


def driver_connection(tdb):
    """A new connection of the driver itself, with its own defaults, to the tenant's database.

    Django's PostgreSQL connection turns psycopg's prepared statements off
    and uses client-side binding; the baseline should not inherit that.
    Foreign keys are enforced on SQLite, as on Django's connections.
    """
    connection = tdb.connection
    params = connection.get_connection_params()
    if connection.vendor == "postgresql":
        import psycopg

        skip = {"cursor_factory", "context", "prepare_threshold"}
        return psycopg.connect(**{k: v for k, v in params.items() if k not in skip})
    if connection.vendor == "mysql":
        import MySQLdb

        return MySQLdb.connect(**{k: v for k, v in params.items() if k != "conv"})
    import sqlite3

    driver = sqlite3.connect(params["database"], isolation_level=None)
    driver.execute("PRAGMA foreign_keys = ON")
    return driver


def raw_insert(tdb, model, rows: list[dict]) -> float:
    """The driver's executemany of one parameterised INSERT, in one transaction."""
    connection = tdb.connection
    fields = [f for f in model._meta.concrete_fields if not f.primary_key]
    keys = [f.name for f in fields]
    quote = connection.ops.quote_name
    mark = "?" if connection.vendor == "sqlite" else "%s"
    sql = (
        f"INSERT INTO {quote(model._meta.db_table)} ({', '.join(quote(f.column) for f in fields)}) "
        f"VALUES ({', '.join([mark] * len(fields))})"
    )
    driver = driver_connection(tdb)
    try:
        cursor = driver.cursor()
        start = time.perf_counter()
        if connection.vendor == "sqlite":
            cursor.execute("BEGIN")
        cursor.executemany(sql, list(map(operator.itemgetter(*keys), rows)))
        if connection.vendor == "sqlite":
            cursor.execute("COMMIT")
        else:
            driver.commit()
        return time.perf_counter() - start
    finally:
        driver.close()


def table_insert(txns, rows: list[dict]) -> float:
    start = time.perf_counter()
    txns.batch_create(rows)
    return time.perf_counter() - start


def orm_insert(txns, rows: list[dict]) -> float:
    """Django's own QuerySet.bulk_create of model instances, for reference."""
    from django.db import transaction

    model, alias = txns.model, txns.tenant_db.alias
    attnames = {f.name: f.attname for f in model._meta.concrete_fields}
    start = time.perf_counter()
    with transaction.atomic(using=alias):
        objs = [model(**{attnames[k]: v for k, v in row.items()}) for row in rows]
        model._default_manager.db_manager(alias).bulk_create(objs)
    return time.perf_counter() - start


def empty(txns) -> None:
    txns.model._default_manager.db_manager(txns.tenant_db.alias).all().delete()


def server_version(tdb) -> str:
    connection = tdb.connection
    with connection.cursor() as cursor:
        cursor.execute("SELECT sqlite_version()" if connection.vendor == "sqlite" else "SELECT version()")
        return str(cursor.fetchone()[0]).split(" on ")[0].split(",")[0]


def bench_server(key: str, count: int, repeat: int, orm: bool) -> list[object]:
    from tenant_schema import drop_tenant_db, get_or_create_tenant_db, register_tables

    tenant_id = slug("bench-insert")
    tdb = get_or_create_tenant_db(tenant_id, server=key)
    try:
        tables = register_tables(tdb, [(Account, "accounts"), (Transaction, "transactions")])
        accounts, txns = tables["accounts"], tables["transactions"]
        rows = make_rows(count, accounts.create({"name": "Checking"}).id)
        # Warm-up (connections, compiled statements, imports) on a slice, then check both stored the same.
        table_insert(txns, rows[:1000])
        via_table = txns.list(limit=3)
        empty(txns)
        raw_insert(tdb, txns.model, rows[:1000])
        via_raw = txns.list(limit=3)
        empty(txns)
        assert [(r.amount, r.booked_on, r.note) for r in via_table] == [
            (r.amount, r.booked_on, r.note) for r in via_raw
        ]
        raw_times, table_times, orm_times = [], [], []
        for i in range(repeat):
            order = [
                (raw_times, lambda: raw_insert(tdb, txns.model, rows)),
                (table_times, lambda: table_insert(txns, rows)),
            ]
            if orm and i < 3:  # slow, and only for reference: median of 3
                order.append((orm_times, lambda: orm_insert(txns, rows)))
            for samples, fn in order if i % 2 == 0 else order[::-1]:
                samples.append(fn())
                assert txns.count() == count
                empty(txns)
        raw, api = statistics.median(raw_times), statistics.median(table_times)
        orm_cell = f"{statistics.median(orm_times):.3f}" if orm else "-"
        return [
            key,
            server_version(tdb),
            f"{raw:.3f}",
            f"{api:.3f}",
            orm_cell,
            f"{count / api:,.0f}",
            f"{raw / api:.2f}",
        ]
    finally:
        tdb.close()
        drop_tenant_db(tenant_id, server=key)


NAME = "batch_insert"
AFTERWORD = """
Why it keeps up with the driver while staying inside Django: the statement
is compiled by Django's `SQLInsertCompiler` — multi-row `VALUES` on SQLite
and MariaDB, PostgreSQL's `INSERT ... SELECT * FROM UNNEST(...)` with one
array per column — but once per table and row shape, then cached (the
warm-up pays that), instead of once per batch. Values are read and
converted a column at a time: a column holding only the field's exact type
goes through the backend's own `connection.ops.adapt_*` (or through
unchanged where that is the identity), anything else through
`get_db_prep_save` as in the ORM; `tests/test_tables.py` checks the two
agree. Full batches of the same statement go in one `executemany`, so
SQLite prepares the statement once. `bulk_create` is slower on the same
rows because it builds a model instance per row and recompiles the
statement per batch, calling each field's conversion chain per value.
Against the driver, SQLite gains from multi-row statements and from
adapting dates in C; PostgreSQL from sending arrays instead of one
`INSERT` per row; on MariaDB both sides end in the same multi-row `INSERT`
(mysqlclient's `executemany` rewrites the statement that way).
"""
HEADERS = ["server", "executemany (s)", "batch_create (s)", "bulk_create, ORM (s)", "batch_create rows/s", "ratio"]
TARGET = 0.80


def measure(argv: list[str]) -> dict:
    """In the tenant-schema worker: the rows of the table."""
    parser = argparse.ArgumentParser(prog="bench batch_insert", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--servers", default="sqlite,pg,mysql")
    parser.add_argument("--no-orm", action="store_true", help="skip the QuerySet.bulk_create reference column")
    args, _ = parser.parse_known_args(argv)
    results, skipped = [], []
    for key in args.servers.split(","):
        if reachable(key):
            results.append(bench_server(key, args.rows, args.repeat, not args.no_orm))
        else:
            skipped.append(key)
    return {"rows": results, "skipped": skipped, "count": args.rows, "repeat": args.repeat}


def run(bench: Run, argv: list[str]) -> Section:
    if bench.quick:
        argv = ["--rows", "2000", "--repeat", "1", *argv]
    load_start = loadavg()
    ts = bench.ts_worker(3, name="batch_insert")
    out = ts.call("batch_insert", argv=argv)
    ts.close()
    load_end = loadavg()
    names = {"sqlite": "SQLite", "pg": "PostgreSQL", "mysql": "MariaDB"}
    rows = [[names.get(r[0], r[0]), *r[2:]] for r in out["rows"]]  # r[1], the version: in the run's header
    text = table(HEADERS, rows)
    targets = [
        Target(f"bulk insert, {row[0]}", f"ratio ≥ {TARGET:.2f}", row[-1], float(row[-1]) >= TARGET) for row in rows
    ]
    body = (
        f"{out['count']:,} rows, median of {out['repeat']} runs; load average {fmt_load(load_start)} at the start, "
        f"{fmt_load(load_end)} at the end. Ratio = executemany time / batch_create time.\n\n" + text
    )
    if out["skipped"]:
        body += f"\n\nNot reachable, skipped: {', '.join(out['skipped'])}."
    load = f"{fmt_load(load_start)} -> {fmt_load(load_end)}"
    print(f"Bulk insert: {out['count']:,} rows, median of {out['repeat']}; load {load}")
    print(text)
    return Section(NAME, "Bulk insert", body, targets, load=(load_start, load_end))
