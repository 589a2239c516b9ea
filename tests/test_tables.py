"""Table CRUD, live on every server: rows as dataclasses, keys checked before SQL, bulk writes atomic."""

from __future__ import annotations

import datetime
import enum
import json
import os
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Optional

import pytest
from django.conf import settings
from django.db import IntegrityError, connections
from django.db.models import F, Q, Value
from django.test.utils import CaptureQueriesContext
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from tenant_schema import create_index, register_table, register_tables
from tenant_schema.schema.tables import Table

pytestmark = pytest.mark.filterwarnings("error::RuntimeWarning")


class Kind(enum.Enum):
    DEBIT = "debit"
    CREDIT = "credit"


@dataclass
class Account:
    name: str = field(metadata={"max_length": 100, "unique": True})
    currency: str = field(default="EUR", metadata={"max_length": 3})
    balance: Decimal = field(default=Decimal("0"), metadata={"max_digits": 12, "decimal_places": 2})
    id: Optional[int] = None


@dataclass
class Transaction:
    account: Account
    amount: Decimal = field(metadata={"max_digits": 12, "decimal_places": 2})
    kind: Kind = Kind.DEBIT
    description: str = ""
    booked_on: Optional[datetime.date] = None
    tags: list = field(default_factory=list)
    id: Optional[int] = None


@dataclass
class Budget:
    account_id: int = field(metadata={"references": "accounts"})
    category: str = field(metadata={"max_length": 40})
    limit: Decimal = field(default=Decimal("100"), metadata={"max_digits": 12, "decimal_places": 2})
    id: Optional[int] = None


@pytest.fixture
def finance(tenant_db):
    tables = register_tables(tenant_db, [(Account, "accounts"), (Transaction, "transactions"), (Budget, "budgets")])
    return tables["accounts"], tables["transactions"], tables["budgets"]


def no_sql(tenant_db):
    """Assert (as a context manager) that no query reaches the tenant's database."""
    return _NoSQL(tenant_db)


class _NoSQL(CaptureQueriesContext):
    def __init__(self, tenant_db):
        super().__init__(tenant_db.connection)

    def __exit__(self, *exc):
        super().__exit__(*exc)
        assert self.captured_queries == [], self.captured_queries


# -- one row ------------------------------------------------------------------------


def test_create_returns_the_dataclass_with_key_and_defaults(finance):
    accounts, transactions, _ = finance
    checking = accounts.insert(Account(name="Checking"))
    assert isinstance(checking, Account)
    assert isinstance(checking.id, int)
    assert (checking.name, checking.currency, checking.balance) == ("Checking", "EUR", Decimal("0"))
    savings = accounts.create({"name": "Savings", "currency": "USD", "balance": Decimal("12.50")})
    assert savings.id != checking.id
    assert accounts.read(savings.id) == Account(name="Savings", currency="USD", balance=Decimal("12.50"), id=savings.id)
    coffee = transactions.create({"account": checking.id, "amount": Decimal("-4.50"), "description": "coffee"})
    assert coffee.tags == [] and coffee.kind is Kind.DEBIT and coffee.account == checking.id


def test_read_update_delete(finance):
    accounts, _, _ = finance
    row = accounts.create({"name": "Checking"})
    assert accounts.read(row.id + 1000) is None
    updated = accounts.update(row.id, {"balance": Decimal("10.00"), "currency": "GBP"})
    assert (updated.balance, updated.currency, updated.name) == (Decimal("10.00"), "GBP", "Checking")
    assert accounts.update(row.id, {"balance": F("balance") + 5}).balance == Decimal("15.00")
    assert accounts.update(row.id + 1000, {"balance": 1}) is None
    whole = accounts.update(row.id, Account(name="Main", currency="EUR", balance=Decimal("1")))
    assert whole == Account(name="Main", currency="EUR", balance=Decimal("1.00"), id=row.id)
    with pytest.raises(ValueError, match="would change the primary key"):
        accounts.update(row.id, {"id": row.id + 1})
    assert accounts.delete(row.id) is True
    assert accounts.delete(row.id) is False
    assert accounts.read(row.id) is None


def test_foreign_keys_accept_field_name_column_or_row(finance):
    accounts, transactions, budgets = finance
    checking = accounts.create({"name": "Checking"})
    by_name = transactions.create({"account": checking.id, "amount": 1})
    by_column = transactions.create({"account_id": checking.id, "amount": 2})
    by_row = transactions.create({"account": checking, "amount": 3})
    assert by_name.account == by_column.account == by_row.account == checking.id
    assert transactions.count({"account": checking}) == 3
    assert transactions.count({"account_id": checking.id}) == 3
    with pytest.raises(ValueError, match="gives column 'account_id' .* twice"):
        transactions.create({"account": checking.id, "account_id": checking.id, "amount": 4})
    budget = budgets.create({"account_id": checking.id, "category": "food"})
    assert budget.account_id == checking.id
    assert budgets.list(where={"account_id": checking.id}) == [budget]


def test_enums_are_stored_as_values_and_come_back_as_members(finance, tenant_db):
    accounts, transactions, _ = finance
    checking = accounts.create({"name": "Checking"})
    salary = transactions.create({"account": checking.id, "amount": 2500, "kind": Kind.CREDIT})
    transactions.create({"account": checking.id, "amount": -3, "kind": "debit"})
    assert transactions.read(salary.id).kind is Kind.CREDIT
    assert [t.id for t in transactions.list(where={"kind": Kind.CREDIT})] == [salary.id]
    assert transactions.count({"kind__in": [Kind.CREDIT, Kind.DEBIT]}) == 2
    with tenant_db.connection.cursor() as cursor:
        cursor.execute("SELECT kind FROM transactions ORDER BY id")
        assert [r[0] for r in cursor.fetchall()] == ["credit", "debit"]


def test_hostile_values_are_bound_parameters(finance):
    accounts, _, _ = finance
    hostile = ["x'); DROP TABLE accounts; --", 'quote " and \\ backslash', "%s %(name)s ?", "naïve ☕ 𝄞"]
    made = [accounts.create({"name": name}) for name in hostile]
    assert [accounts.read(r.id).name for r in made] == hostile
    assert [r.name for r in accounts.list(where={"name__in": hostile}, order_by="id")] == hostile
    assert accounts.count({"name": hostile[0]}) == 1
    assert accounts.batch_create([{"name": n + "!"} for n in hostile]) == len(hostile)
    assert accounts.count({"name__endswith": "!"}) == len(hostile)


def test_primary_keys_of_other_types(tenant_db):
    @dataclass
    class Currency:
        code: str = field(metadata={"max_length": 3})
        name: str = ""

    currencies = register_table(tenant_db, Currency, "currencies", pk="code")
    assert currencies.create({"code": "EUR", "name": "Euro"}) == Currency("EUR", "Euro")
    assert currencies.read("EUR").name == "Euro"
    with pytest.raises(IntegrityError):
        currencies.create({"code": "EUR", "name": "again"})
    assert currencies.update("EUR", {"name": "euro"}).name == "euro"


def test_json_and_dates_round_trip(finance):
    accounts, transactions, _ = finance
    checking = accounts.create({"name": "Checking"})
    row = transactions.create(
        {
            "account": checking.id,
            "amount": Decimal("1.25"),
            "tags": ["a", {"b": 1}],
            "booked_on": datetime.date(2024, 2, 29),
        }
    )
    back = transactions.read(row.id)
    assert back.tags == ["a", {"b": 1}] and back.booked_on == datetime.date(2024, 2, 29)
    assert back.amount == Decimal("1.25")


# -- many rows ----------------------------------------------------------------------


@pytest.fixture
def ledger(finance):
    accounts, transactions, _ = finance
    checking = accounts.create({"name": "Checking"})
    rows = [
        {"account": checking.id, "amount": Decimal(a), "kind": k, "description": d, "booked_on": b}
        for a, k, d, b in [
            ("-4.50", Kind.DEBIT, "coffee", datetime.date(2024, 1, 3)),
            ("2500.00", Kind.CREDIT, "salary", datetime.date(2024, 1, 1)),
            ("-61.20", Kind.DEBIT, "groceries", None),
            ("-4.50", Kind.DEBIT, "coffee", datetime.date(2024, 1, 2)),
            ("120.00", Kind.CREDIT, "refund", datetime.date(2024, 1, 5)),
        ]
    ]
    return transactions, transactions.batch_create(rows, returning=True)


def test_list_filters_with_equality_and_django_lookups(ledger):
    transactions, rows = ledger
    assert [t.description for t in transactions.list(where={"description": "coffee"})] == ["coffee", "coffee"]
    assert {t.description for t in transactions.list(where={"amount__gte": 100})} == {"salary", "refund"}
    assert [t.description for t in transactions.list(where={"booked_on__isnull": True})] == ["groceries"]
    assert [t.description for t in transactions.list(where={"booked_on__year": 2024, "amount__lt": -5})] == []
    assert transactions.count({"description__startswith": "co"}) == 2
    either = Q(description="salary") | Q(amount__lt=-50)
    assert {t.description for t in transactions.list(where=either)} == {"salary", "groceries"}
    assert transactions.count() == 5


def test_list_orders_like_sql_and_like_django(ledger):
    transactions, rows = ledger
    by_amount = [t.description for t in transactions.list(order_by="amount DESC")]
    assert by_amount == ["salary", "refund", "coffee", "coffee", "groceries"]
    assert [t.description for t in transactions.list(order_by="-amount")] == by_amount
    assert [t.description for t in transactions.list(order_by=["amount"])] == by_amount[::-1][:2] + [
        "coffee",
        "refund",
        "salary",
    ]
    two = transactions.list(order_by="kind ASC, amount DESC")
    assert [t.description for t in two] == ["salary", "refund", "coffee", "coffee", "groceries"]
    dated = transactions.list(order_by="booked_on DESC NULLS LAST")
    assert [t.description for t in dated][-1] == "groceries"
    assert [t.id for t in transactions.list()] == sorted(r.id for r in rows)  # primary key by default


def test_list_pages_are_stable(ledger):
    transactions, rows = ledger
    pages = [transactions.list(order_by="amount", limit=2, offset=o) for o in (0, 2, 4)]
    assert sum(len(p) for p in pages) == 5
    assert len({t.id for p in pages for t in p}) == 5
    assert transactions.list(limit=0) == []
    assert len(transactions.list(offset=3)) == 2
    with pytest.raises(ValueError, match="limit must be a non-negative integer"):
        transactions.list(limit=-1)


# -- names are checked before any SQL ------------------------------------------------


@pytest.mark.parametrize(
    "call, message",
    [
        (
            lambda t: t.list(where={"amout": 1}),
            r"no column 'amout' \(in where\); columns are: account \(column account_id\), amount,",
        ),
        (lambda t: t.count({"amount__gte; DROP TABLE x": 1}), "amount__gte; DROP TABLE x|invalid where"),
        (lambda t: t.list(where={"amount__nope": 1}), "invalid where for table 'transactions'"),
        (lambda t: t.list(order_by="amount; DROP TABLE transactions"), "invalid order_by term"),
        (lambda t: t.list(order_by="color DESC"), r"no column 'color' \(in order_by\)"),
        (lambda t: t.list(order_by="-amount DESC"), "has both '-' and 'DESC'"),
        (lambda t: t.create({"amount": 1, "colour": "red"}), "no column 'colour'"),
        (lambda t: t.create({"description": "no amount"}), r"required column\(s\) account_id, amount"),
        (lambda t: t.update(1, {"amont": 2}), "no column 'amont'"),
        (lambda t: t.batch_create([{"account": 1, "amount": 1}, {"account": 1, "amount": 2, "x": 3}]), "no column 'x'"),
        (
            lambda t: t.batch_create([{"account": 1, "amount": 1}, {"amount": 2}]),
            r"row 1 of table 'transactions' has no value for required column\(s\) account_id",
        ),
        (lambda t: t.batch_update([{"amount": 2}]), "no value for key column 'id'"),
        (lambda t: t.batch_update([{"id": 1, "amount": 2}], key_column="nope"), r"no column 'nope' \(in key_column\)"),
        (lambda t: t.upsert([{"id": 1, "amount": 2}], conflict=("id", "ghost")), r"no column 'ghost' \(in conflict\)"),
        (lambda t: t.create(["not", "a", "row"]), "is a dict or a Transaction instance"),
    ],
)
def test_bad_names_are_value_errors_before_any_sql(finance, tenant_db, call, message):
    _, transactions, _ = finance
    with no_sql(tenant_db), pytest.raises((ValueError, TypeError), match=message):
        call(transactions)


@hsettings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(key=st.text(min_size=1, max_size=30))
def test_arbitrary_keys_never_reach_sql(finance, tenant_db, key):
    _, transactions, _ = finance
    valid = set(transactions.columns) | {"account", "pk"}
    if key.split("__")[0] in valid:
        return
    with no_sql(tenant_db):
        for call in (
            lambda: transactions.list(where={key: 1}),
            lambda: transactions.list(order_by=key),
            lambda: transactions.create({key: 1}),
            lambda: transactions.batch_update([{"id": 1, key: 1}]),
        ):
            with pytest.raises(ValueError, match="no column|invalid order_by"):
                call()


# -- bulk -------------------------------------------------------------------------------


def test_batch_create_inserts_in_bulk_in_one_transaction(finance, tenant_db):
    accounts, transactions, _ = finance
    checking = accounts.create({"name": "Checking"})
    rows = [{"account": checking.id, "amount": Decimal(i) / 4, "description": f"t{i}"} for i in range(2500)]
    with CaptureQueriesContext(tenant_db.connection) as queries:
        assert transactions.batch_create(rows) == 2500
    inserts = [q for q in queries.captured_queries if q["sql"].lstrip().upper().startswith("INSERT")]
    assert 1 <= len(inserts) <= 20, f"{len(inserts)} INSERT statements for 2,500 rows"
    assert transactions.count() == 2500
    assert transactions.read(transactions.list(where={"description": "t2499"})[0].id).amount == Decimal("624.75")


def test_batch_create_returning_gives_rows_in_order(finance):
    accounts, transactions, _ = finance
    checking = accounts.create({"name": "Checking"})
    given_rows = [Transaction(account=checking.id, amount=Decimal(i), kind=Kind.CREDIT) for i in range(5)]
    given_rows.append({"account": checking.id, "amount": 5, "description": "dict among dataclasses"})
    made = transactions.batch_create(given_rows, returning=True)
    assert [r.amount for r in made] == [Decimal(i) for i in range(6)]
    assert all(isinstance(r, Transaction) and isinstance(r.id, int) for r in made)
    assert made[-1].kind is Kind.DEBIT and made[-1].description == "dict among dataclasses"
    assert [transactions.read(r.id) for r in made] == made
    assert transactions.batch_create([]) == 0 and transactions.batch_create([], returning=True) == []


def test_batch_create_keeps_given_keys_and_generates_the_rest(finance):
    accounts, _, _ = finance
    made = accounts.batch_create([{"name": "a", "id": 1000}, {"name": "b"}, {"name": "c", "id": None}], returning=True)
    assert made[0].id == 1000 and made[1].id not in (None, 1000) and made[2].id not in (None, 1000)
    assert accounts.read(1000).name == "a"


# A unique violation is the database's IntegrityError; a None for a NOT NULL
# column never reaches the database (a ValueError before any SQL).
@pytest.mark.parametrize(
    "bad, error", [("unique", IntegrityError), ("not null", ValueError)], ids=["unique", "not null"]
)
def test_a_refused_batch_writes_nothing(finance, tenant_db, bad, error):
    accounts, transactions, _ = finance
    checking = accounts.create({"name": "Checking"})
    if bad == "unique":
        table, rows = accounts, [{"name": f"acc{i}"} for i in range(500)] + [{"name": "acc7"}]
    else:
        table = transactions
        rows = [{"account": checking.id, "amount": i} for i in range(500)] + [{"account": checking.id, "amount": None}]
    before = table.count()
    with pytest.raises(error):
        table.batch_create(rows)
    assert table.count() == before
    # Inside an outer transaction the batch is a savepoint: the rest survives.
    with tenant_db.atomic():
        accounts.create({"name": "kept"})
        with pytest.raises(error):
            table.batch_create(rows)
    assert accounts.count({"name": "kept"}) == 1


def test_batch_update_by_key(finance, tenant_db):
    accounts, _, _ = finance
    made = accounts.batch_create([{"name": f"acc{i}"} for i in range(10)], returning=True)
    matched = accounts.batch_update(
        [
            {"id": made[0].id, "balance": 5},
            {"id": made[1].id, "balance": 6, "currency": "USD"},
            {"id": made[2].id, "balance": 7},
            {"id": 999_999, "balance": 1},
        ]
    )
    assert matched == 3
    assert [(a.balance, a.currency) for a in accounts.list(limit=3)] == [
        (Decimal("5.00"), "EUR"),
        (Decimal("6.00"), "USD"),
        (Decimal("7.00"), "EUR"),
    ]
    assert accounts.batch_update([{"name": "acc9", "balance": 9}], key_column="name") == 1
    assert accounts.read(made[9].id).balance == Decimal("9.00")
    with CaptureQueriesContext(tenant_db.connection) as queries:
        accounts.batch_update([{"id": a.id, "balance": 1} for a in made])
    updates = [q for q in queries.captured_queries if "UPDATE" in q["sql"].upper()]
    assert len(updates) <= 10  # executemany of one statement (logged per row on some drivers)
    assert accounts.count({"balance": 1}) == 10
    assert accounts.batch_update([{"id": made[0].id, "balance": F("balance") + 1}]) == 1  # expressions: the ORM
    assert accounts.read(made[0].id).balance == Decimal("2.00")


def test_batch_update_is_all_or_nothing(finance):
    accounts, _, _ = finance
    a, b = accounts.batch_create([{"name": "a"}, {"name": "b"}], returning=True)
    with pytest.raises(IntegrityError):
        accounts.batch_update([{"id": a.id, "balance": 3}, {"id": b.id, "name": "a"}])
    assert accounts.read(a.id).balance == Decimal("0.00")


def test_upsert_inserts_or_updates_with_the_native_clause(finance, tenant_db):
    accounts, _, _ = finance
    first = accounts.create({"name": "Checking", "balance": 1})
    with CaptureQueriesContext(tenant_db.connection) as queries:
        n = accounts.upsert([{"name": "Checking", "balance": 2}, {"name": "Savings", "balance": 3}], conflict="name")
    assert n == 2
    sql = " ".join(q["sql"].upper() for q in queries.captured_queries)
    assert "ON CONFLICT" in sql or "ON DUPLICATE KEY UPDATE" in sql
    assert [(a.name, a.balance, a.id == first.id) for a in accounts.list(order_by="name")] == [
        ("Checking", Decimal("2.00"), True),
        ("Savings", Decimal("3.00"), False),
    ]
    back = accounts.upsert(
        [{"name": "Savings", "balance": 4, "currency": "USD"}, {"name": "Checking", "balance": 5}],
        conflict=("name",),
        update=["balance"],
        returning=True,
    )
    assert [(a.name, a.balance, a.currency) for a in back] == [
        ("Savings", Decimal("4.00"), "EUR"),
        ("Checking", Decimal("5.00"), "EUR"),
    ]
    assert back[1].id == first.id
    assert accounts.upsert([{"id": first.id, "name": "Main"}], conflict="id") == 1
    assert accounts.read(first.id).name == "Main"


def test_upsert_checks_its_conflict_target(finance, tenant_db):
    accounts, _, budgets = finance
    checking = accounts.create({"name": "Checking"})
    with no_sql(tenant_db), pytest.raises(ValueError, match="same conflict key"):
        accounts.upsert([{"name": "x"}, {"name": "x"}], conflict="name")
    with pytest.raises(ValueError, match="no primary key, unique constraint or unique index covers"):
        budgets.upsert([{"account_id": checking.id, "category": "food"}], conflict=("account_id", "category"))
    create_index(tenant_db, "budgets", ["account_id", "category"], unique=True)
    rows = [{"account_id": checking.id, "category": "food", "limit": 50}]
    assert budgets.upsert(rows, conflict=("account_id", "category")) == 1
    rows[0]["limit"] = 80
    assert budgets.upsert(rows, conflict=("category", "account_id")) == 1
    assert [(b.category, b.limit) for b in budgets.list()] == [("food", Decimal("80.00"))]
    with pytest.raises(ValueError, match="every row needs conflict column 'id'"):
        accounts.upsert([{"name": "y"}], conflict="id")


@pytest.mark.parametrize("statement_returns_keys", [True, False], ids=["returning", "matching"])
def test_upsert_returns_every_row_it_wrote_whatever_form_its_key_was_given_in(
    finance, tenant_db, monkeypatch, statement_returns_keys
):
    """A key given as "1" for 1, or in another case under a case-insensitive collation, still finds its row."""
    accounts, _, _ = finance
    if not statement_returns_keys:  # the path of a backend without INSERT ... RETURNING (MySQL 8)
        monkeypatch.setattr(type(tenant_db.connection.features), "can_return_rows_from_bulk_insert", False)
    checking = accounts.create({"name": "Checking", "balance": 1})
    savings = accounts.create({"name": "Savings", "balance": 2})

    with CaptureQueriesContext(tenant_db.connection) as queries:
        back = accounts.upsert(
            [{"id": str(checking.id), "name": "Checking", "balance": 7}], conflict="id", returning=True
        )
    assert back == [Account(name="Checking", balance=Decimal("7.00"), id=checking.id)]
    upserts = [q["sql"].upper() for q in queries.captured_queries if q["sql"].upper().startswith("INSERT")]
    assert len(upserts) == 1 and ("RETURNING" in upserts[0]) is statement_returns_keys
    with pytest.raises(ValueError, match="conflict column 'id' cannot hold 'one'"):
        accounts.upsert([{"id": "one", "name": "x"}], conflict="id", returning=True)

    rows = [{"name": "checking", "balance": 5}, {"name": "Travel", "balance": 6}, {"name": "SAVINGS", "balance": 8}]
    for batch_size in (None, 1):
        back = accounts.upsert(rows, conflict="name", returning=True, batch_size=batch_size)
        assert None not in back and [a.balance for a in back] == [Decimal("5.00"), Decimal("6.00"), Decimal("8.00")]
        # Each row is the one the database now holds under that name, as its own "=" compares names
        # (the existing row on MariaDB's case-insensitive collation, a new one elsewhere).
        assert back == [accounts.list(where={"name": row["name"]})[0] for row in rows]
        assert back == [accounts.read(a.id) for a in back]
    assert accounts.read(savings.id).balance == (Decimal("8.00") if back[2].id == savings.id else Decimal("2.00"))
    # An expression takes Django's bulk_create, which reports the key given (9999), not the row updated.
    back = accounts.upsert(
        [{"id": 9999, "name": "Checking", "balance": Value(3)}], conflict="name", update=["balance"], returning=True
    )
    assert [(a.id, a.balance) for a in back] == [(checking.id, Decimal("3.00"))]


def test_upsert_keys_given_in_another_form_are_still_duplicates(finance, tenant_db):
    accounts, _, _ = finance
    first = accounts.create({"name": "Checking"})
    with no_sql(tenant_db), pytest.raises(ValueError, match="rows 0 and 1 .* have the same conflict key"):
        accounts.upsert([{"id": first.id, "name": "a"}, {"id": str(first.id), "name": "b"}], conflict="id")


# -- what the compiled path sends equals what the ORM sends -------------------------------


def _conversion_cases():
    from django.db import models

    aware = st.datetimes(
        min_value=datetime.datetime(1900, 1, 1),
        max_value=datetime.datetime(2200, 1, 1),
        timezones=st.just(datetime.UTC),
    )
    return [
        (models.BigIntegerField(), st.one_of(st.integers(-(2**63), 2**63 - 1), st.booleans(), st.none())),
        (models.IntegerField(), st.one_of(st.integers(-(2**31), 2**31 - 1), st.none())),
        (models.CharField(max_length=20), st.one_of(st.text(max_size=20), st.integers(), st.none())),
        (models.TextField(), st.one_of(st.text(), st.none())),
        (models.FloatField(), st.one_of(st.floats(allow_nan=False), st.integers(-1000, 1000))),
        (models.BooleanField(), st.one_of(st.booleans(), st.sampled_from([0, 1]))),
        (
            models.DecimalField(max_digits=12, decimal_places=2),
            st.one_of(
                st.decimals(min_value=-(10**9), max_value=10**9, places=2), st.integers(-(10**6), 10**6), st.none()
            ),
        ),
        (models.DateField(), st.one_of(st.dates(), st.none(), st.dates().map(str))),
        (models.DateTimeField(), st.one_of(aware, st.none())),
        (models.TimeField(), st.one_of(st.times(), st.none())),
        (models.JSONField(), st.one_of(st.lists(st.integers()), st.dictionaries(st.text(), st.integers()))),
        (models.UUIDField(), st.uuids()),
    ]


@hsettings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_column_conversion_matches_get_db_prep_save(tenant_db, data):
    from tenant_schema.schema.bulk import column_converter

    connection = tenant_db.connection
    for model_field, values in _conversion_cases():
        model_field.set_attributes_from_name("value")
        column = data.draw(st.lists(values, min_size=1, max_size=8))
        expected = [model_field.get_db_prep_save(v, connection) for v in column]
        got = column_converter(model_field, connection, lambda f, v: v)(list(column))
        assert [repr(g) for g in got] == [repr(e) for e in expected], model_field


def test_foreign_key_and_enum_columns_convert_like_the_orm(finance, tenant_db):
    from tenant_schema.schema.bulk import column_converter

    _, transactions, _ = finance
    codec, connection = transactions._codec, tenant_db.connection
    account = transactions.model._meta.get_field("account")
    column = [1, None, 2**40, Account(name="x", id=7), "8"]
    expected = [account.get_db_prep_save(codec.norm(account, v), connection) for v in column]
    assert column_converter(account, connection, codec.norm)(column) == expected == [1, None, 2**40, 7, 8]
    kind = transactions.model._meta.get_field("kind")
    assert column_converter(kind, connection, codec.norm)([Kind.CREDIT, "debit", None]) == ["credit", "debit", None]


# -- tables registered from Django models, opened by name, after a restart ------------------


def test_django_model_tables_return_model_instances(tenant_db):
    from tests.tenantapp.models import Category, Note, Tag

    tables = register_tables(tenant_db, [Category, Note, Tag])
    notes = tables["tenantapp_note"]
    note = notes.create({"title": "hello"})
    assert isinstance(note, Note) and note.pk and note.body == "" and note.pinned is False
    assert notes.read(note.pk) == note
    assert notes.update(note.pk, {"pinned": True}).pinned is True
    made = notes.batch_create([Note(title="a"), Note(title="b")], returning=True)
    assert all(isinstance(n, Note) and n.pk for n in made) and not made[0]._state.adding
    assert [n.title for n in notes.list(where={"title__in": ["a", "b"]}, order_by="-title")] == ["b", "a"]
    tag = tables["tenantapp_tag"].create({"label": "x"})
    Tag.notes.through.objects.using(tenant_db.alias).create(tag_id=tag.pk, note_id=note.pk)
    assert notes.delete(note.pk) is True  # the many-to-many rows go with it
    assert Tag.notes.through.objects.using(tenant_db.alias).count() == 0


def test_table_by_name_returns_dicts_keyed_by_column(finance, tenant_db):
    accounts, transactions, _ = finance
    checking = accounts.create({"name": "Checking"})
    transactions.create({"account": checking.id, "amount": Decimal("2.50"), "tags": ["x"]})
    tenant_db.forget_tables()  # as after a restart: nothing registered in this process
    opened = tenant_db.table("transactions")
    assert isinstance(opened, Table) and opened.row_type is dict
    [row] = opened.list()
    assert row["account_id"] == checking.id and Decimal(row["amount"]) == Decimal("2.50")
    made = opened.create({"account_id": checking.id, "amount": 3, "kind": "credit", "description": "", "tags": "[]"})
    assert made["id"] > row["id"]
    assert (
        opened.batch_create(
            [{"account_id": checking.id, "amount": 4, "kind": "debit", "description": "", "tags": "[]"}]
        )
        == 1
    )
    assert opened.count({"amount__gte": 3}) == 2
    with pytest.raises(ValueError, match="required column"):
        opened.create({"account_id": checking.id})


def test_tables_are_usable_from_a_fresh_process(finance, tenant_db):
    accounts, _, _ = finance
    accounts.batch_create([{"name": "Checking"}, {"name": "Savings"}])
    script = (
        "import django, json, sys; django.setup()\n"
        "from tenant_schema import get_tenant_db\n"
        f"tdb = get_tenant_db({tenant_db.slug!r}, server={tenant_db.server.key!r})\n"
        "print(json.dumps({'registered': sorted(tdb.tables), 'rows': tdb.table('accounts').list(order_by='name')},"
        " default=str))\n"
    )
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "TENANT_SCHEMA_TEST_DIR": str(settings.TENANT_DIR),
        "TENANT_SCHEMA_DISABLE_PLUGIN_AUTOLOAD": "1",
        # the child reads this run's test registry, where the tenant is registered
        "TENANT_SCHEMA_REGISTRY_URL": f"sqlite:///{connections['default'].settings_dict['NAME']}",
    }
    out = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120, cwd=settings.BASE_DIR
    )
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["registered"] == []
    assert [r["name"] for r in result["rows"]] == ["Checking", "Savings"]


# -- transactions and cascades ---------------------------------------------------------------


def test_with_table_is_a_transaction(finance, tenant_db):
    accounts, transactions, _ = finance
    with accounts as t:
        t.create({"name": "kept"})
    with pytest.raises(RuntimeError):
        with accounts:
            accounts.create({"name": "rolled back"})
            with transactions:  # nested: a savepoint
                pass
            raise RuntimeError("boom")
    with pytest.raises(RuntimeError):
        with tenant_db.atomic():
            accounts.create({"name": "also rolled back"})
            raise RuntimeError("boom")
    assert [a.name for a in accounts.list()] == ["kept"]


def test_table_transactions_are_per_thread(finance):
    accounts, _, _ = finance
    seen = []

    def other_thread():
        seen.append(accounts.count())
        connections.close_all()

    with accounts:
        accounts.create({"name": "uncommitted"})
        if accounts.tenant_db.dialect.name == "sqlite":
            return  # one writer at a time: another connection would wait for the lock
        thread = threading.Thread(target=other_thread)
        thread.start()
        thread.join()
    assert seen == [0]
    assert accounts.count() == 1


def test_delete_cascades_through_registered_foreign_keys(finance):
    accounts, transactions, budgets = finance
    checking, savings = accounts.batch_create([{"name": "Checking"}, {"name": "Savings"}], returning=True)
    transactions.batch_create(
        [{"account": checking.id, "amount": i} for i in range(3)] + [{"account": savings.id, "amount": 9}]
    )
    budgets.create({"account_id": checking.id, "category": "food"})
    assert accounts.delete(checking.id) is True
    assert [t.account for t in transactions.list()] == [savings.id]
    assert budgets.count() == 0


def test_delete_ignores_tables_other_tenants_share_a_model_with(server_key, make_tenant_db):
    full, lean = make_tenant_db(server_key), make_tenant_db(server_key)
    register_table(full, Account, "accounts")
    register_table(full, Transaction, "transactions")  # a reverse foreign key on the shared accounts model
    accounts = register_table(lean, Account, "accounts")  # the same model class, no transactions table
    assert accounts.model is full.tables["accounts"].model
    row = accounts.create({"name": "Checking"})
    assert accounts.delete(row.id) is True
    lean.close()
    full.close()


def test_a_generated_column_is_computed_by_the_database_and_never_written(tenant_db):
    """A model's GeneratedField: rows leave it out, a dict that sets it is refused, reads return it."""
    from tests.tenantapp.tables import Priced

    table = register_table(tenant_db, Priced, "priced")
    created = table.create({"label": "abc"})
    assert created.label_length == 3
    table.batch_create([{"label": "ünï"}, Priced(label="")])  # an instance's label_length is not written
    assert sorted((r.label, r.label_length) for r in table.list()) == [("", 0), ("abc", 3), ("ünï", 3)]
    with pytest.raises(ValueError, match=r"sets column 'label_length' of table 'priced', which the database computes"):
        table.create({"label": "x", "label_length": 1})
    table.update(created.id, {"label": "abcdef"})
    assert table.read(created.id).label_length == 6
    [returned] = table.batch_create([{"label": "four"}], returning=True)
    assert (returned.label, returned.label_length) == ("four", 4)  # computed by the database, read when first used
    with pytest.raises(ValueError, match=r"updates column 'label_length', which the database computes"):
        table.upsert([{"id": 1, "label": "x"}], conflict="id", update=["label_length"])
    register_table(tenant_db, Priced, "priced")  # the live table matches the model: registered again
