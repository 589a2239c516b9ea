"""The async twins of Table, live on every server, under pytest-asyncio (asyncio_mode=auto)."""

from __future__ import annotations

from decimal import Decimal

import pytest
from asgiref.sync import sync_to_async
from django.db import IntegrityError

from tenant_schema import register_tables
from tests.test_tables import Account, Budget, Kind, Transaction


@pytest.fixture
def finance(tenant_db):
    tables = register_tables(tenant_db, [(Account, "accounts"), (Transaction, "transactions"), (Budget, "budgets")])
    return tables["accounts"], tables["transactions"]


@pytest.fixture
async def closing(tenant_db):
    """Close the connection the async calls opened in Django's worker thread."""
    yield tenant_db
    await sync_to_async(tenant_db.close)()


async def test_single_row_calls(finance, closing):
    accounts, transactions = finance
    checking = await accounts.ainsert(Account(name="Checking"))
    assert isinstance(checking, Account) and checking.id
    row = await transactions.acreate({"account": checking.id, "amount": Decimal("-4.50"), "kind": Kind.DEBIT})
    assert (await transactions.aread(row.id)) == row
    assert await transactions.aread(row.id + 100) is None
    updated = await transactions.aupdate(row.id, {"description": "coffee"})
    assert updated.description == "coffee" and updated.kind is Kind.DEBIT
    assert await transactions.aupdate(row.id + 100, {"description": "x"}) is None
    assert await transactions.adelete(row.id) is True
    assert await transactions.adelete(row.id) is False


async def test_list_count_and_bulk_calls(finance, closing):
    accounts, transactions = finance
    checking = await accounts.acreate({"name": "Checking"})
    made = await transactions.abatch_create(
        [{"account": checking.id, "amount": Decimal(i)} for i in range(50)], returning=True
    )
    assert [r.amount for r in made] == [Decimal(i) for i in range(50)]
    assert await transactions.acount({"amount__gte": 40}) == 10
    top = await transactions.alist(where={"amount__gte": 40}, order_by="-amount", limit=3)
    assert [t.amount for t in top] == [Decimal(49), Decimal(48), Decimal(47)]
    assert await transactions.abatch_update([{"id": made[0].id, "amount": 100}, {"id": made[1].id, "amount": 101}]) == 2
    assert await transactions.acount({"amount__gte": 100}) == 2
    n = await accounts.aupsert([{"name": "Checking", "balance": 3}, {"name": "Savings"}], conflict="name")
    assert n == 2
    assert [(a.name, a.balance) for a in await accounts.alist(order_by="name")] == [
        ("Checking", Decimal("3.00")),
        ("Savings", Decimal("0.00")),
    ]
    assert await transactions.abatch_create(iter([])) == 0
    back = await accounts.aupsert(
        [{"id": str(checking.id), "name": "Checking", "balance": 4}], conflict="id", returning=True
    )  # the key as a string still finds the row written
    assert back == [Account(name="Checking", balance=Decimal("4.00"), id=checking.id)]


async def test_async_with_table_is_a_transaction(finance, closing):
    accounts, _ = finance
    async with accounts as t:
        await t.acreate({"name": "kept"})
    with pytest.raises(RuntimeError):
        async with accounts:
            await accounts.acreate({"name": "rolled back"})
            assert await accounts.acount() == 2  # visible inside its own transaction
            raise RuntimeError("boom")
    assert [a.name for a in await accounts.alist()] == ["kept"]


async def test_async_errors_are_the_sync_ones(finance, closing):
    accounts, transactions = finance
    with pytest.raises(ValueError, match="no column 'amout'"):
        await transactions.alist(where={"amout": 1})
    with pytest.raises(ValueError, match="invalid order_by term"):
        await transactions.alist(order_by="amount;")
    await accounts.acreate({"name": "Checking"})
    with pytest.raises(IntegrityError):
        await accounts.acreate({"name": "Checking"})
    with pytest.raises(IntegrityError):
        await accounts.abatch_create([{"name": "a"}, {"name": "Checking"}])
    assert await accounts.acount() == 1
