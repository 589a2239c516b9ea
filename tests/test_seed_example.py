"""The project's first example runs as written, live on every server.

A plain annotated class (not a dataclass) is a row type: ``register_table``
makes the class itself a dataclass, as ``@dataclass`` would. ``x: T = None``
is a nullable column. A ``None`` for a NOT NULL column is a ``ValueError``
naming the table and the field, raised before any SQL, on every write path.

Classes are defined inside the tests: registering one changes it (it becomes
a dataclass), and each test (and each server) must start from a plain class.
Annotations are evaluated eagerly here (no ``from __future__ import
annotations``) so a local class can name another local class.
"""

import dataclasses
import datetime
import enum
import threading
from typing import NamedTuple, Optional

import pytest

from tenant_schema import list_tables, register_table, register_tables
from tests.tenantapp.helpers import no_sql

# -- the seed's example ----------------------------------------------------------------


@pytest.fixture
def tenant_123(db_access):
    """The seed's tenant, by the seed's own slug, on the default server."""
    from tenant_schema import drop_tenant_db

    yield "tenant-123"
    drop_tenant_db("tenant-123")


def test_the_seed_example_runs_as_written(tenant_123):
    from tenant_schema import get_or_create_tenant_db

    class Transaction:
        id: str
        amount: float
        date: str
        category: str = None

    tenant_db = get_or_create_tenant_db("tenant-123")
    transactions = register_table(tenant_db, Transaction, "transactions")
    transactions.insert(Transaction(id="t1", amount=100.0, date="2024-01-01"))

    assert transactions.read("t1") == Transaction(id="t1", amount=100.0, date="2024-01-01", category=None)


def test_a_plain_class_becomes_a_dataclass_and_rows_come_back_as_it(tenant_db):
    class Transaction:
        id: str
        amount: float
        date: str
        category: str = None

    transactions = register_table(tenant_db, Transaction, "transactions")
    assert dataclasses.is_dataclass(Transaction)
    assert [f.name for f in dataclasses.fields(Transaction)] == ["id", "amount", "date", "category"]

    stored = transactions.insert(Transaction(id="t1", amount=100.0, date="2024-01-01"))
    assert isinstance(stored, Transaction)
    assert stored == Transaction("t1", 100.0, "2024-01-01")  # positional, like @dataclass
    assert (
        repr(stored) == "test_a_plain_class_becomes_a_dataclass_and_rows_come_back_as_it.<locals>."
        "Transaction(id='t1', amount=100.0, date='2024-01-01', category=None)"
    )
    transactions.insert(Transaction(id="t2", amount=-4.5, date="2024-01-02", category="food"))
    assert [t.id for t in transactions.list(where={"category__isnull": True})] == ["t1"]
    assert transactions.list(where={"category": "food"}) == [Transaction("t2", -4.5, "2024-01-02", "food")]
    # Registering again is the same table; the class is a dataclass once, not twice.
    assert register_table(tenant_db, Transaction, "transactions") is transactions
    assert transactions.count() == 2


def test_plain_classes_in_register_tables_and_foreign_keys(tenant_db):
    class Account:
        name: str
        id: Optional[int] = None

    class Entry:
        account: Account
        amount: float
        memo: str = None
        id: Optional[int] = None

    tables = register_tables(tenant_db, [(Account, "accounts"), (Entry, "entries")])
    checking = tables["accounts"].create(Account(name="Checking"))
    entry = tables["entries"].create(Entry(account=checking, amount=2.5))
    assert entry == Entry(account=checking.id, amount=2.5, memo=None, id=entry.id)
    assert tables["entries"].columns == ["account_id", "amount", "memo", "id"]


def test_a_plain_subclass_of_a_dataclass_gets_its_own_fields(tenant_db):
    @dataclasses.dataclass
    class Base:
        id: str

    class Tagged(Base):  # not itself a dataclass: its own annotations are not fields yet
        tag: str = None

    tagged = register_table(tenant_db, Tagged, "tagged")
    assert tagged.columns == ["id", "tag"]
    assert tagged.create(Tagged(id="a", tag="x")) == Tagged("a", "x")


def test_a_class_dataclass_refuses_is_left_as_it_was(tenant_db):
    class Misordered:
        id: str
        note: str = ""
        amount: float  # a field without a default after one with a default

    class MutableDefault:
        id: str
        tags: list = []

    for cls, reason in [
        (Misordered, "non-default argument 'amount' follows default argument"),
        (MutableDefault, "mutable default <class 'list'> for field tags is not allowed"),
    ]:
        before = dict(vars(cls))
        with (
            no_sql(tenant_db),
            pytest.raises(
                TypeError,
                match=rf"{cls.__name__} is not a dataclass and "
                rf"cannot be made one: {reason}",
            ),
        ):
            register_table(tenant_db, cls, "broken")
        assert dict(vars(cls)) == before and not dataclasses.is_dataclass(cls)
    assert "broken" not in list_tables(tenant_db)


def test_a_plain_class_is_left_as_it_was_when_registration_is_refused(tenant_db):
    class Odd:
        id: int
        value: complex

    with no_sql(tenant_db), pytest.raises(TypeError, match="Odd.value: unsupported annotation"):
        register_table(tenant_db, Odd, "odd")
    assert not dataclasses.is_dataclass(Odd)
    assert "odd" not in list_tables(tenant_db)


def test_threads_registering_one_plain_class_at_once_all_succeed(tenant_db):
    class Reading:
        id: str
        value: float = None

    barrier = threading.Barrier(6)
    errors, tables = [], {}

    def register(i):
        try:
            barrier.wait()
            tables[i] = register_table(tenant_db, Reading, f"readings_{i}")
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            tenant_db.close()

    threads = [threading.Thread(target=register, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert dataclasses.is_dataclass(Reading) and "__init__" in vars(Reading)
    tables[0].insert(Reading(id="r1"))
    assert tables[0].read("r1") == Reading("r1", None)


def test_a_refused_batch_puts_back_every_class_it_made_a_dataclass(tenant_db):
    class Good:
        id: str

    class Bad:
        id: str
        save: str = ""  # Model.save: refused

    with no_sql(tenant_db), pytest.raises(ValueError, match=r"field Bad\.save: "):
        register_tables(tenant_db, [(Good, "good"), (Bad, "bad")])
    assert not dataclasses.is_dataclass(Good) and not dataclasses.is_dataclass(Bad)
    assert not {"good", "bad"} & set(list_tables(tenant_db))


class Point(NamedTuple):
    id: int
    x: int


class Colour(enum.Enum):
    RED = "red"


class WithInit:
    id: str

    def __init__(self, id):
        self.id = id


class NoFields:
    pass


@pytest.mark.parametrize(
    "source, message",
    [
        (Point, "Point is a tuple class"),
        (Colour, "Colour is an Enum class"),
        (WithInit, "WithInit defines its own __init__"),
        (NoFields, "NoFields has no annotated fields"),
        (WithInit("x"), "is not a class"),
        ("Transaction", "is not a class"),
    ],
    ids=["namedtuple", "enum", "own-init", "no-fields", "instance", "string"],
)
def test_what_cannot_be_a_row_type_is_a_type_error_before_any_sql(tenant_db, source, message):
    with no_sql(tenant_db), pytest.raises(TypeError, match=message):
        register_table(tenant_db, source, "nope")
    assert not dataclasses.is_dataclass(source)


# -- "= None" is a nullable column -------------------------------------------------------


def test_a_none_default_makes_a_nullable_column(tenant_db):
    class Account:
        name: str
        id: Optional[int] = None

    class Bill:
        id: str
        amount: float = None
        due: datetime.date = None
        account: Account = None  # a nullable foreign key: deleting the account sets it to NULL
        paid: bool = False

    tables = register_tables(tenant_db, [(Account, "accounts"), (Bill, "bills")])
    accounts, bills = tables["accounts"], tables["bills"]
    assert bills.create({"id": "b1"}) == Bill(id="b1")
    checking = accounts.create({"name": "Checking"})
    bills.create(Bill(id="b2", amount=12.5, due=datetime.date(2024, 5, 1), account=checking.id))
    assert bills.count({"amount__isnull": True, "due__isnull": True, "account__isnull": True}) == 1
    assert bills.update("b2", {"amount": None, "due": None}).amount is None
    assert accounts.delete(checking.id) is True
    assert bills.read("b2") == Bill(id="b2", account=None)
    # The live table agrees: opened by name, the columns are nullable.
    with tenant_db._tables_lock:
        registered = dict(tenant_db._tables)
        tenant_db.forget_tables()
    try:
        opened = tenant_db.table("bills")
        nullable = {f.column for f in opened.model._meta.concrete_fields if f.null}
        assert nullable == {"amount", "due", "account_id"}
    finally:
        with tenant_db._tables_lock:
            tenant_db._tables.update(registered)


def test_a_none_default_on_the_primary_key_keeps_it_required(tenant_db):
    class Code:
        id: str = None
        label: str = ""

    codes = register_table(tenant_db, Code, "codes")
    with (
        no_sql(tenant_db),
        pytest.raises(ValueError, match=r"row of table 'codes' has no value for required column\(s\) id"),
    ):
        codes.create({"label": "x"})
    with no_sql(tenant_db), pytest.raises(ValueError, match="table 'codes'.*'id' is NOT NULL"):
        codes.create(Code(label="x"))


# -- None for a NOT NULL column ------------------------------------------------------------


@pytest.fixture
def entries(tenant_db):
    class Account:
        name: str
        id: Optional[int] = None

    class Entry:
        id: str
        amount: float
        account: Account
        note: str = ""
        category: str = None

    tables = register_tables(tenant_db, [(Account, "accounts"), (Entry, "entries")])
    account = tables["accounts"].create({"name": "Checking"})
    tables["entries"].create({"id": "e0", "amount": 1.0, "account": account.id})
    return Entry, tables["entries"], account.id


NOT_NULL_CALLS = {
    "insert": (
        lambda E, t, a: t.insert(E(id="e1", amount=None, account=a)),
        r"row of table 'entries' gives None for amount, but column 'amount' is NOT NULL",
    ),
    "create-dict": (
        lambda E, t, a: t.create({"id": "e1", "amount": 1.0, "account": a, "note": None}),
        r"row of table 'entries' gives None for note, but column 'note' is NOT NULL",
    ),
    "create-fk": (
        lambda E, t, a: t.create({"id": "e1", "amount": 1.0, "account": None}),
        r"row of table 'entries' gives None for account, but column 'account_id' is NOT NULL",
    ),
    "create-pk": (
        lambda E, t, a: t.create({"id": None, "amount": 1.0, "account": a}),
        r"row of table 'entries' gives None for id, but column 'id' is NOT NULL",
    ),
    "update": (
        lambda E, t, a: t.update("e0", {"amount": None}),
        r"update of table 'entries' gives None for amount, but column 'amount' is NOT NULL",
    ),
    "batch_create-dataclasses": (
        lambda E, t, a: t.batch_create([E(id="e1", amount=1.0, account=a), E(id="e2", amount=None, account=a)]),
        r"row 1 of table 'entries' gives None for amount, but column 'amount' is NOT NULL",
    ),
    "batch_create-dicts": (
        lambda E, t, a: t.batch_create(
            [{"id": "e1", "amount": 1.0, "account": a}, {"id": "e2", "amount": 2.0, "account": None}]
        ),
        r"row 1 of table 'entries' gives None for account, but column 'account_id' is NOT NULL",
    ),
    "batch_create-mixed": (
        lambda E, t, a: t.batch_create([E(id="e1", amount=1.0, account=a), {"id": "e2", "amount": None, "account": a}]),
        r"row 1 of table 'entries' gives None for amount, but column 'amount' is NOT NULL",
    ),
    "batch_create-returning": (
        lambda E, t, a: t.batch_create([{"id": "e1", "amount": 1.0, "account": a, "note": None}], returning=True),
        r"row 0 of table 'entries' gives None for note, but column 'note' is NOT NULL",
    ),
    "upsert": (
        lambda E, t, a: t.upsert([{"id": "e0", "amount": None, "account": a}], conflict="id"),
        r"row 0 of table 'entries' gives None for amount, but column 'amount' is NOT NULL",
    ),
    "batch_update": (
        lambda E, t, a: t.batch_update([{"id": "e0", "note": "ok"}, {"id": "e0", "note": None}]),
        r"row 1 of table 'entries' gives None for note, but column 'note' is NOT NULL",
    ),
}


@pytest.mark.parametrize("call", NOT_NULL_CALLS, ids=list(NOT_NULL_CALLS))
def test_none_for_a_not_null_column_is_a_value_error_before_any_sql(entries, tenant_db, call):
    Entry, table, account = entries
    write, message = NOT_NULL_CALLS[call]
    with no_sql(tenant_db), pytest.raises(ValueError, match=message):
        write(Entry, table, account)
    assert table.list() == [Entry(id="e0", amount=1.0, account=account)]


def test_none_is_still_fine_where_it_means_something(entries, tenant_db):
    Entry, table, account = entries
    table.create({"id": "e1", "amount": 2.0, "account": account, "category": None})  # a nullable column
    table.update("e0", {"category": None, "id": None})  # an update's id of None is "the row's own key"
    assert table.batch_create([Entry(id="e2", amount=3.0, account=account, category=None)]) == 1
    assert table.count({"category__isnull": True}) == 3


def test_none_for_a_generated_key_means_generate_it(tenant_db):
    class Account:
        name: str
        id: Optional[int] = None

    accounts = register_table(tenant_db, Account, "accounts")
    made = accounts.batch_create([Account(name="a"), {"name": "b", "id": None}], returning=True)
    assert [a.id is not None for a in made] == [True, True]
    assert accounts.create(Account(name="c")).id is not None


def test_none_for_a_not_null_column_of_a_table_opened_by_name(entries, tenant_db):
    Entry, _, account = entries
    with tenant_db._tables_lock:
        registered = dict(tenant_db._tables)
        tenant_db.forget_tables()
    try:
        opened = tenant_db.table("entries")
        with (
            no_sql(tenant_db),
            pytest.raises(
                ValueError, match=r"row 0 of table 'entries' gives None for amount, but column 'amount' is NOT NULL"
            ),
        ):
            opened.batch_create([{"id": "e1", "amount": None, "account_id": account, "note": ""}])
        assert opened.count() == 1
    finally:
        with tenant_db._tables_lock:
            tenant_db._tables.update(registered)


async def test_async_writes_refuse_none_too(entries, tenant_db):
    Entry, table, account = entries
    with pytest.raises(ValueError, match=r"row of table 'entries' gives None for amount"):
        await table.acreate({"id": "e1", "amount": None, "account": account})
    with pytest.raises(ValueError, match=r"row 0 of table 'entries' gives None for amount"):
        await table.abatch_create([Entry(id="e1", amount=None, account=account)])
    with pytest.raises(ValueError, match=r"update of table 'entries' gives None for amount"):
        await table.aupdate("e0", {"amount": None})
    assert await table.acount() == 1
