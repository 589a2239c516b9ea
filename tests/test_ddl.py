"""Tables and indexes on every live dialect: creation, idempotence, drift, all-or-nothing."""

from __future__ import annotations

import dataclasses
import datetime
import decimal
import enum
import uuid
from dataclasses import dataclass, field
from typing import Optional

import pytest
from django.db import IntegrityError, OperationalError

from tenant_schema import (
    SchemaMismatch,
    create_index,
    create_indexes,
    drop_index,
    drop_table,
    list_indexes,
    list_tables,
    register_table,
    register_tables,
    table_exists,
)


class Kind(enum.Enum):
    DEBIT = "debit"
    CREDIT = "credit"


@dataclass
class Account:
    id: int
    name: str = field(metadata={"max_length": 100, "unique": True})
    opened: Optional[datetime.date] = None
    balance: decimal.Decimal = decimal.Decimal("0")


@dataclass
class Transaction:
    id: int
    account: Account
    memo: str
    amount: float = 0.0
    kind: Kind = Kind.DEBIT
    booked_at: Optional[datetime.datetime] = None
    tags: list = field(default_factory=list)


@dataclass
class Everything:
    id: uuid.UUID = field(default_factory=uuid.uuid4)
    text: str = ""
    short: str = field(default="", metadata={"max_length": 20, "index": True})
    count: int = 0
    ratio: float = 0.0
    flag: bool = False
    price: decimal.Decimal = decimal.Decimal("0")
    at: Optional[datetime.datetime] = None
    day: Optional[datetime.date] = None
    clock: Optional[datetime.time] = None
    blob: Optional[bytes] = None
    doc: dict = field(default_factory=dict)
    kind: Kind = Kind.CREDIT


def columns(tenant_db, table):
    connection = tenant_db.connection
    with connection.cursor() as cursor:
        return {r.name: bool(r.null_ok) for r in connection.introspection.get_table_description(cursor, table)}


def test_register_table_creates_the_table_and_returns_the_same_table_again(tenant_db):
    table = register_table(tenant_db, Account, "accounts")
    assert table_exists(tenant_db, "accounts")
    assert columns(tenant_db, "accounts") == {"id": False, "name": False, "opened": True, "balance": False}
    assert register_table(tenant_db, Account, "accounts") is table
    assert tenant_db.tables == {"accounts": table}


def test_every_supported_annotation_maps_to_a_column(tenant_db):
    register_table(tenant_db, Everything, "everything")
    assert set(columns(tenant_db, "everything")) == {f.name for f in dataclasses.fields(Everything)}
    index_columns = {i.columns for i in list_indexes(tenant_db, "everything")}
    assert ("short",) in index_columns  # metadata index=True


def test_unique_metadata_is_enforced(tenant_db):
    table = register_table(tenant_db, Account, "accounts")
    manager = table.model._default_manager.db_manager(tenant_db.alias)
    manager.create(name="checking")
    with pytest.raises(IntegrityError):
        with tenant_db.atomic():
            manager.create(name="checking")


def test_register_tables_orders_by_foreign_keys(tenant_db):
    tables = register_tables(tenant_db, [(Transaction, "transactions"), (Account, "accounts")])
    assert list(tables) == ["transactions", "accounts"]
    assert list_tables(tenant_db) == ["accounts", "transactions"]
    account = tables["accounts"].model._default_manager.db_manager(tenant_db.alias).create(name="a")
    txns = tables["transactions"].model._default_manager.db_manager(tenant_db.alias)
    txns.create(account_id=account.pk, memo="coffee")
    assert "account_id" in columns(tenant_db, "transactions")
    with pytest.raises(IntegrityError):
        with tenant_db.atomic():
            txns.create(account_id=999_999, memo="dangling")
            # SQLite checks deferred foreign keys at commit.


@dataclass
class Employee:
    id: int
    name: str
    team_id: Optional[int] = field(default=None, metadata={"references": "teams"})


@dataclass
class Team:
    id: int
    name: str
    lead_id: Optional[int] = field(default=None, metadata={"references": "employees"})


def test_foreign_key_cycles_are_created(tenant_db):
    tables = register_tables(tenant_db, [(Employee, "employees"), (Team, "teams")])
    assert list_tables(tenant_db) == ["employees", "teams"]
    teams = tables["teams"].model._default_manager.db_manager(tenant_db.alias)
    employees = tables["employees"].model._default_manager.db_manager(tenant_db.alias)
    team = teams.create(name="core")
    lead = employees.create(name="ada", team_id_id=team.pk)
    teams.filter(pk=team.pk).update(lead_id_id=lead.pk)
    assert columns(tenant_db, "employees") == {"id": False, "name": False, "team_id": True}


def test_existing_table_with_other_columns_is_a_clear_error(tenant_db):
    @dataclass
    class Old:
        id: int
        name: str

    @dataclass
    class New:
        id: int
        name: Optional[str]
        email: str

    register_table(tenant_db, Old, "people")
    with pytest.raises(SchemaMismatch) as excinfo:
        register_table(tenant_db, New, "people")
    message = str(excinfo.value)
    assert "missing columns ['email']" in message
    assert "column 'name' should be nullable" in message


def test_unsupported_annotation_is_a_type_error_naming_the_field(tenant_db):
    @dataclass
    class Bad:
        id: int
        when: complex

    with pytest.raises(TypeError, match=r"Bad\.when: unsupported annotation"):
        register_table(tenant_db, Bad, "bad")
    assert list_tables(tenant_db) == []


def test_missing_primary_key_field_is_reported(tenant_db):
    @dataclass
    class NoId:
        name: str

    with pytest.raises(ValueError, match="no field 'id'"):
        register_table(tenant_db, NoId, "noid")
    table = register_table(tenant_db, NoId, "named", pk="name")
    assert table.model._meta.pk.name == "name"


def test_django_model_tables(tenant_db):
    from tests.tenantapp.models import Note

    table = register_table(tenant_db, Note)
    assert table.name == "tenantapp_note"
    copy = register_table(tenant_db, Note, "notes_archive")
    assert set(columns(tenant_db, "notes_archive")) == set(columns(tenant_db, "tenantapp_note"))
    assert copy.model is not Note


def test_create_index_is_idempotent_and_names_are_stable(tenant_db):
    register_tables(tenant_db, [(Account, "accounts"), (Transaction, "transactions")])
    name = create_index(tenant_db, "transactions", ["memo", "amount"])
    assert name == "idx_transactions_memo_amount"
    assert create_index(tenant_db, "transactions", ["memo", "amount"]) == name
    assert [i for i in list_indexes(tenant_db, "transactions") if i.name == name] == [(name, ("memo", "amount"), False)]
    with pytest.raises(ValueError, match="already exists on 'transactions' as \\['memo', 'amount'\\]"):
        create_index(tenant_db, "transactions", ["amount"], index_name=name)


def test_create_indexes_specs_leave_out_what_takes_its_default(tenant_db):
    """(table, columns[, unique[, name[, options]]]): a spec stops where its defaults begin."""
    register_tables(tenant_db, [(Account, "accounts"), (Transaction, "transactions")])
    names = create_indexes(
        tenant_db,
        [
            ("transactions", "memo"),
            ("transactions", ["amount", "memo"], True),
            ("accounts", "opened", False, "by_opened"),
        ],
    )
    assert names == ["idx_transactions_memo", "idx_transactions_amount_memo", "by_opened"]
    assert {(i.name, i.columns, i.unique) for i in list_indexes(tenant_db, "transactions")} >= {
        ("idx_transactions_memo", ("memo",), False),
        ("idx_transactions_amount_memo", ("amount", "memo"), True),
    }


def test_long_index_names_are_shortened_with_a_stable_hash(tenant_db):
    @dataclass
    class Wide:
        id: int
        a_really_quite_long_column_name_number_one: int = 0
        a_really_quite_long_column_name_number_two: int = 0

    register_table(tenant_db, Wide, "wide_table_with_a_long_name")
    cols = ["a_really_quite_long_column_name_number_one", "a_really_quite_long_column_name_number_two"]
    name = create_index(tenant_db, "wide_table_with_a_long_name", cols)
    assert len(name) <= tenant_db.dialect.max_identifier_length
    assert name.startswith("idx_wide_table_with_a_long_name_")
    assert create_index(tenant_db, "wide_table_with_a_long_name", cols) == name


def test_unique_index_on_a_text_column(tenant_db):
    """MySQL needs a prefix length for TEXT; every dialect must take it."""
    table = register_tables(tenant_db, [(Account, "accounts"), (Transaction, "transactions")])["transactions"]
    create_index(tenant_db, "transactions", ["memo"], unique=True)
    manager = table.model._default_manager.db_manager(tenant_db.alias)
    account = (
        register_table(tenant_db, Account, "accounts")
        .model._default_manager.db_manager(tenant_db.alias)
        .create(name="x")
    )
    manager.create(account_id=account.pk, memo="rent")
    with pytest.raises(IntegrityError):
        with tenant_db.atomic():
            manager.create(account_id=account.pk, memo="rent")


def test_drop_index_finds_the_table_when_not_given(tenant_db):
    register_table(tenant_db, Account, "accounts")
    create_index(tenant_db, "accounts", ["opened"], index_name="by_opened")
    assert drop_index(tenant_db, "by_opened") is True
    assert "by_opened" not in {i.name for i in list_indexes(tenant_db, "accounts")}
    assert drop_index(tenant_db, "by_opened") is False
    create_index(tenant_db, "accounts", ["opened"], index_name="by_opened")
    assert drop_index(tenant_db, "by_opened", table_name="accounts") is True


def test_unknown_column_in_an_index_lists_the_valid_ones(tenant_db):
    register_table(tenant_db, Account, "accounts")
    with pytest.raises(ValueError, match=r"no column 'nope'; columns are: balance, id, name, opened"):
        create_index(tenant_db, "accounts", ["nope"])


def test_drop_table(tenant_db):
    register_table(tenant_db, Account, "accounts")
    assert drop_table(tenant_db, "accounts") is True
    assert drop_table(tenant_db, "accounts") is False
    assert tenant_db.tables == {}
    assert list_tables(tenant_db) == []


def test_create_index_works_on_tables_not_registered_in_this_process(tenant_db):
    register_table(tenant_db, Account, "accounts")
    tenant_db.forget_tables()  # as after a restart
    assert create_index(tenant_db, "accounts", ["opened"]) == "idx_accounts_opened"


# -- all or nothing -----------------------------------------------------------

DDL_PREFIXES = ("CREATE", "ALTER", "DROP", "COMMENT")


class FailKth:
    """``execute_wrapper`` failing the k-th DDL statement (0 = count only)."""

    def __init__(self, k: int = 0) -> None:
        self.k = k
        self.seen = 0
        self.statements: list[str] = []

    def __call__(self, execute, sql, params, many, context):
        if sql.lstrip().upper().startswith(DDL_PREFIXES):
            self.seen += 1
            self.statements.append(sql)
            if self.seen == self.k:
                raise OperationalError(f"injected failure at DDL statement {self.k}: {sql[:60]}")
        return execute(sql, params, many, context)


@dataclass
class Budget:
    id: int
    account: Account
    month: datetime.date
    limit: decimal.Decimal = field(default=decimal.Decimal("0"), metadata={"max_digits": 12, "decimal_places": 2})
    note: str = field(default="", metadata={"max_length": 50, "index": True})


@dataclass
class Keep:
    id: int
    value: str


def _snapshot(tenant_db):
    return {t: sorted(list_indexes(tenant_db, t)) for t in list_tables(tenant_db)}


def test_register_tables_leaves_nothing_when_any_statement_fails(tenant_db):
    """Fail each DDL statement of the batch in turn: nothing of the batch remains,
    the table created before is untouched, and without a failure it all succeeds."""
    keep = register_table(tenant_db, Keep, "keep")
    keep.model._default_manager.db_manager(tenant_db.alias).create(value="precious")
    before = _snapshot(tenant_db)
    batch = [(Account, "accounts"), (Transaction, "transactions"), (Budget, "budgets")]

    counter = FailKth()
    # Count the statements against a throwaway database on the same server.
    from tenant_schema import drop_tenant_db

    from .conftest import make_bare_tenant_db

    probe = make_bare_tenant_db(tenant_db.server.key, f"{tenant_db.slug}-p")
    try:
        with probe.connection.execute_wrapper(counter):
            register_tables(probe, batch)
    finally:
        probe.close()
        drop_tenant_db(probe.slug)
    total = counter.seen
    assert total >= 5, counter.statements

    for k in range(1, total + 1):
        with tenant_db.connection.execute_wrapper(FailKth(k)):
            with pytest.raises(OperationalError, match=f"injected failure at DDL statement {k}"):
                register_tables(tenant_db, batch)
        assert _snapshot(tenant_db) == before, f"statement {k} of {total} left something behind"
        assert set(tenant_db.tables) == {"keep"}
    values = list(keep.model._default_manager.db_manager(tenant_db.alias).values_list("value", flat=True))
    assert values == ["precious"]
    register_tables(tenant_db, batch)
    assert list_tables(tenant_db) == ["accounts", "budgets", "keep", "transactions"]


def test_create_indexes_leaves_nothing_when_any_statement_fails(tenant_db):
    register_tables(tenant_db, [(Account, "accounts"), (Transaction, "transactions")])
    create_index(tenant_db, "transactions", ["amount"], index_name="existing_amount")
    before = _snapshot(tenant_db)
    specs = [
        ("transactions", ["memo"], False, None),
        ("transactions", ["kind", "amount"], False, "by_kind"),
        ("accounts", ["opened"], False, None),
        ("transactions", ["booked_at"], True, None),
        ("transactions", ["amount"], False, "existing_amount"),  # already there: skipped
    ]
    for k in range(1, 5):
        with tenant_db.connection.execute_wrapper(FailKth(k)):
            with pytest.raises(OperationalError):
                create_indexes(tenant_db, specs)
        assert _snapshot(tenant_db) == before, f"index statement {k} left something behind"
    counter = FailKth()
    with tenant_db.connection.execute_wrapper(counter):
        names = create_indexes(tenant_db, specs)
    assert counter.seen == 4
    assert names == [
        "idx_transactions_memo",
        "by_kind",
        "idx_accounts_opened",
        "idx_transactions_booked_at",
        "existing_amount",
    ]
    assert {"idx_transactions_memo", "by_kind", "idx_transactions_booked_at", "existing_amount"} <= {
        i.name for i in list_indexes(tenant_db, "transactions")
    }


# -- concurrent creators, interrupted creations, drift ----------------------------


def test_a_concurrent_creator_of_the_same_table_is_not_undone(tenant_db, monkeypatch):
    """Another worker creates the table between our check and our CREATE: our call
    must neither drop its table (and its rows) nor fail."""
    import threading

    from django.db import connections

    @dataclass
    class Item:
        name: str = ""
        id: Optional[int] = None

    introspection = type(tenant_db.connection.introspection)
    real = introspection.table_names
    main = threading.current_thread()
    raced = []

    def other_worker():
        table = register_tables(tenant_db, [(Item, "items")])["items"]
        table.model._default_manager.db_manager(tenant_db.alias).create(name="written by the other worker")
        connections[tenant_db.alias].close()

    def table_names(self, cursor=None, include_views=False):
        names = real(self, cursor, include_views)
        if not raced and threading.current_thread() is main:
            raced.append(True)
            worker = threading.Thread(target=other_worker)
            worker.start()
            worker.join()
        return names

    monkeypatch.setattr(introspection, "table_names", table_names)
    tenant_db.forget_tables()
    mine = register_tables(tenant_db, [(Item, "items")])["items"]
    monkeypatch.setattr(introspection, "table_names", real)
    assert raced and list_tables(tenant_db) == ["items"]
    names = list(mine.model._default_manager.db_manager(tenant_db.alias).values_list("name", flat=True))
    assert names == ["written by the other worker"]


def test_an_interrupted_creation_is_completed_when_registered_again(tenant_db):
    """A process killed after CREATE TABLE but before the deferred index and foreign
    key (possible where DDL does not roll back): registering again adds them."""
    tables = register_tables(tenant_db, [(Account, "accounts"), (Budget, "budgets")])
    model = tables["budgets"].model
    complete = {i.columns for i in list_indexes(tenant_db, "budgets")}
    connection = tenant_db.connection
    with connection.cursor() as cursor:
        fks_before = {
            n for n, i in connection.introspection.get_constraints(cursor, "budgets").items() if i["foreign_key"]
        }
    drop_table(tenant_db, "budgets")
    with connection.schema_editor(atomic=False) as editor:  # the "crash": CREATE TABLE only
        editor.create_model(model)
        editor.deferred_sql.clear()
    assert ("note",) not in {i.columns for i in list_indexes(tenant_db, "budgets")}
    tenant_db.forget_tables()
    register_tables(tenant_db, [(Account, "accounts"), (Budget, "budgets")])
    assert {i.columns for i in list_indexes(tenant_db, "budgets")} == complete
    with connection.cursor() as cursor:
        fks_after = {
            n for n, i in connection.introspection.get_constraints(cursor, "budgets").items() if i["foreign_key"]
        }
    assert fks_after == fks_before


def test_an_existing_column_of_another_type_is_a_mismatch(tenant_db):
    @dataclass
    class Price:
        amount: str = ""
        id: Optional[int] = None

    @dataclass
    class PriceAsNumber:
        amount: int = 0
        id: Optional[int] = None

    register_table(tenant_db, Price, "prices")
    with pytest.raises(SchemaMismatch, match="column 'amount' holds text values, the model wants integer"):
        register_table(tenant_db, PriceAsNumber, "prices")


def test_every_mapped_type_is_accepted_again_on_an_existing_table(tenant_db):
    """The type comparison must not reject what tenant-schema itself created."""
    register_table(tenant_db, Everything, "everything")
    register_tables(tenant_db, [(Account, "accounts"), (Transaction, "transactions")])
    tenant_db.forget_tables()
    with tenant_db.connection.execute_wrapper(counter := CountDDL()):
        again = register_table(tenant_db, Everything, "everything")
        tables = register_tables(tenant_db, [(Account, "accounts"), (Transaction, "transactions")])
    assert counter.ddl == []  # adopted as they are: nothing created, altered or dropped
    assert again.name == "everything" and sorted(tables) == ["accounts", "transactions"]
    assert sorted(tenant_db.tables) == ["accounts", "everything", "transactions"]


class CountDDL:
    """``execute_wrapper`` keeping the DDL statements that ran."""

    def __init__(self):
        self.ddl = []

    def __call__(self, execute, sql, params, many, context):
        if sql.lstrip().upper().startswith(("CREATE", "ALTER", "DROP")):
            self.ddl.append(sql)
        return execute(sql, params, many, context)
