"""Names that are valid identifiers but mean something to Django, live on every server.

A dataclass field becomes an attribute of a Django model: one named like a
model attribute (``save``, ``objects``, ``pk``, ``_state``, ``Meta``...) or
one Django cannot query (``a__b``, ``trailing_``) is a ``ValueError`` naming
the field and why, before any SQL. Columns of an existing table opened by
name may be called anything: they work, under safe attribute names.

``where`` keys are ``column`` or ``column__lookup`` (or
``column__part[__lookup]`` for date and time columns); a path through a
foreign key is refused, in dicts, in ``Q`` objects, in ``F`` values and in
``order_by``.
"""

from __future__ import annotations

import dataclasses
import datetime
import enum
import re
from dataclasses import dataclass, field
from typing import Optional

import pytest
from django.apps.registry import Apps
from django.db import models
from django.db.models import Exists, F, Q

from tenant_schema import list_tables, register_table, register_tables
from tests.tenantapp.helpers import no_sql


def hostile(name: str, annotation: type = str, default=""):
    """A dataclass ``Hostile`` with an ``id`` and one field called ``name``."""
    return dataclasses.make_dataclass("Hostile", [("id", int), (name, annotation, field(default=default))])


# -- reserved field names ---------------------------------------------------------------

MODEL_ATTRIBUTE = "is an attribute of every Django model"
REFUSED = {
    "save": MODEL_ATTRIBUTE,
    "delete": MODEL_ATTRIBUTE,
    "objects": MODEL_ATTRIBUTE,
    "DoesNotExist": MODEL_ATTRIBUTE,
    "MultipleObjectsReturned": MODEL_ATTRIBUTE,
    "clean": MODEL_ATTRIBUTE,
    "full_clean": MODEL_ATTRIBUTE,
    "refresh_from_db": MODEL_ATTRIBUTE,
    "check": MODEL_ATTRIBUTE,
    "from_db": MODEL_ATTRIBUTE,
    "pk": "'pk' is a reserved word that cannot be used as a field name",
    "Meta": "a Django model class reads its options from Meta",
    "_state": "names starting with '_' are reserved for Django's model internals",
    "_private": "names starting with '_' are reserved for Django's model internals",
    "a__b": 'Field names must not contain "__"',
    "trailing_": "Field names must not end with an underscore",
}


@pytest.mark.parametrize("name", REFUSED)
def test_a_field_named_like_a_django_model_internal_is_refused_before_any_sql(tenant_db, name):
    with no_sql(tenant_db), pytest.raises(ValueError) as caught:
        register_table(tenant_db, hostile(name), "hostile")
    message = str(caught.value)
    assert f"field Hostile.{name}: " in message
    assert REFUSED[name] in message
    assert f"field(metadata={{'db_column': '{name}'}})" in message  # how to keep the column name
    assert "hostile" not in list_tables(tenant_db)


def test_every_attribute_of_a_django_model_is_refused(tenant_db):
    """Derived from Django itself: whatever a model has, a field may not replace."""
    names = {n for n in dir(models.Model) if not n.startswith("__")}
    names |= {"objects", "DoesNotExist", "MultipleObjectsReturned", "_meta", "_state", "Meta"}
    names.discard("id")
    assert {"save", "delete", "pk", "clean", "full_clean", "refresh_from_db", "asave"} <= names
    with no_sql(tenant_db):
        for name in sorted(names):
            with pytest.raises(ValueError, match=rf"field Hostile\.{re.escape(name)}: "):
                register_table(tenant_db, hostile(name), "hostile")
    assert "hostile" not in list_tables(tenant_db)


def test_a_reserved_name_is_refused_as_the_primary_key_too(tenant_db):
    with no_sql(tenant_db), pytest.raises(ValueError, match=r"field Hostile\.pk: .*'pk' is a reserved word"):
        register_table(tenant_db, dataclasses.make_dataclass("Hostile", [("pk", str)]), "hostile", pk="pk")


class Kind(enum.Enum):
    DEBIT = "debit"
    CREDIT = "credit"


def test_names_django_adds_for_a_field_are_refused(tenant_db):
    choices = dataclasses.make_dataclass("Hostile", [("id", int), ("kind", Kind), ("get_kind_display", str)])
    with (
        no_sql(tenant_db),
        pytest.raises(
            ValueError,
            match=r"field Hostile\.get_kind_display: Django adds get_kind_display to the model for "
            r"field kind",
        ),
    ):
        register_table(tenant_db, choices, "hostile")
    dated = dataclasses.make_dataclass("Hostile", [("id", int), ("due", datetime.date), ("get_next_by_due", str)])
    with (
        no_sql(tenant_db),
        pytest.raises(
            ValueError,
            match=r"field Hostile\.get_next_by_due: Django adds "
            r"get_next_by_due to the model for field due",
        ),
    ):
        register_table(tenant_db, dated, "hostile")
    assert "hostile" not in list_tables(tenant_db)


@dataclass
class Fine:
    """Names that look like Django's but are not: all allowed, all round-trip."""

    code: str
    id: int = 0  # not the primary key here, and still allowed
    saved: bool = False
    state: str = ""
    meta: dict = field(default_factory=dict)
    object: str = ""
    select: str = ""
    order: int = 0
    check_number: str = ""
    save_as: str = field(default="", metadata={"db_column": "save"})  # the column may be called save


def test_names_close_to_django_internals_are_fine(tenant_db):
    fine = register_table(tenant_db, Fine, "fine", pk="code")
    assert fine.columns == ["code", "id", "saved", "state", "meta", "object", "select", "order", "check_number", "save"]
    row = Fine(
        code="a",
        id=7,
        saved=True,
        state="s",
        meta={"k": 1},
        object="o",
        select="sel",
        order=2,
        check_number="c1",
        save_as="x",
    )
    assert fine.create(row) == row
    fine.create(Fine(code="b", id=8, save_as="y", order=1))
    assert fine.read("a") == row
    assert fine.list(where={"id": 7, "save": "x", "order__gte": 2}) == [row]
    assert fine.list(where={"save_as": "x"}) == [row]
    assert fine.list(where={"pk": "a"}) == [row]  # pk: the primary key, here code
    assert [r.code for r in fine.list(order_by="save DESC")] == ["b", "a"]
    assert [r.code for r in fine.list(order_by="order, id")] == ["b", "a"]
    assert fine.update("a", {"save": "z", "state": "t"}).save_as == "z"
    assert fine.delete("a") is True


# -- fields that clash with each other -----------------------------------------------------


@dataclass
class Acc:
    name: str
    id: Optional[int] = None


@dataclass
class TxKeyClash:
    acc: Acc  # a foreign key whose attribute and column are acc_id
    acc_id: int = 0  # ... and a field of that name
    id: Optional[int] = None


@dataclass
class TxAttnameClash:
    acc: Acc
    acc_id: int = field(default=0, metadata={"db_column": "other"})
    id: Optional[int] = None


@dataclass
class ColumnClash:
    id: int
    a: str = field(default="", metadata={"db_column": "b"})
    b: str = ""


@pytest.mark.parametrize(
    "source, message",
    [
        (TxKeyClash, r"field TxKeyClash\.acc_id clashes with TxKeyClash\.acc, a foreign key Django keeps as acc_id"),
        (
            TxAttnameClash,
            r"field TxAttnameClash\.acc_id clashes with TxAttnameClash\.acc, a foreign key Django "
            r"keeps as acc_id",
        ),
        (ColumnClash, r"fields ColumnClash\.a and ColumnClash\.b both have column 'b'"),
    ],
    ids=["fk-column", "fk-attribute", "db_column"],
)
def test_fields_that_clash_with_each_other_are_refused_before_any_sql(tenant_db, source, message):
    with no_sql(tenant_db), pytest.raises(ValueError, match=message):
        register_tables(tenant_db, [(Acc, "accs"), (source, "clash")])
    assert not {"accs", "clash"} & set(list_tables(tenant_db))


# -- an existing table with hostile column names ------------------------------------------------

HOSTILE_COLUMNS = ["save", "delete", "objects", "pk", "_state", "Meta", "DoesNotExist", "a__b", "clean", "trailing_"]


def legacy_table(tenant_db, table: str, fields: dict[str, models.Field]) -> None:
    """Create ``table`` the way another tool would: a Django model of its own, in a registry of its own."""
    meta = type("Meta", (), {"apps": Apps(), "app_label": "legacy", "db_table": table})
    model = type("Legacy", (models.Model,), {"__module__": __name__, "Meta": meta, **fields})
    with tenant_db.connection.schema_editor() as editor:
        editor.create_model(model)


def test_an_existing_table_with_hostile_column_names_reads_and_writes(tenant_db):
    legacy_table(
        tenant_db, "legacy", {f"c{i}": models.TextField(db_column=c, null=True) for i, c in enumerate(HOSTILE_COLUMNS)}
    )
    legacy = tenant_db.table("legacy")
    assert legacy.columns == ["id", *HOSTILE_COLUMNS]

    row = {c: f"v-{c}" for c in HOSTILE_COLUMNS}
    made = legacy.create(row)
    assert made == {"id": made["id"], **row}
    assert legacy.read(made["id"]) == made
    for column in HOSTILE_COLUMNS:
        assert legacy.list(where={column: f"v-{column}"}) == [made], column
        assert legacy.count({f"{column}__startswith": "v-"}) == 1, column
        assert legacy.count(Q(**{f"{column}__isnull": True})) == 0, column
        assert legacy.list(order_by=f"{column} DESC") == [made], column
    assert legacy.count({"pk": "v-pk"}) == 1  # the column called pk, not the primary key

    assert legacy.update(made["id"], {"save": "saved", "objects": None})["save"] == "saved"
    other = legacy.create({"save": "b", "a__b": "ab"})
    assert other["a__b"] == "ab" and other["delete"] is None
    assert legacy.batch_create([{"save": "b2", "_state": "s"}, {"save": "b3"}]) == 2
    assert legacy.batch_update([{"id": other["id"], "Meta": "m"}]) == 1
    assert legacy.upsert([{"id": other["id"], "clean": "c"}], conflict="id") == 1
    assert legacy.read(other["id"]) == {**other, "Meta": "m", "clean": "c"}
    assert legacy.list(where={"save__in": ["saved", "b"]}, order_by="save") == [
        legacy.read(other["id"]),
        legacy.read(made["id"]),
    ]
    assert legacy.delete(made["id"]) is True

    with pytest.raises(ValueError) as caught:
        legacy.list(where={"nope": 1})
    assert "columns are: " in str(caught.value) and "col_" not in str(caught.value)
    assert "save" in str(caught.value) and "a__b" in str(caught.value)


def test_an_existing_table_whose_primary_key_is_called_save(tenant_db):
    legacy_table(
        tenant_db,
        "legacy_keys",
        {
            "key": models.CharField(max_length=20, primary_key=True, db_column="save"),
            "ident": models.IntegerField(db_column="id", null=True),
        },
    )
    keys = tenant_db.table("legacy_keys")
    assert keys.columns == ["save", "id"]
    assert keys.create({"save": "k1", "id": 5}) == {"save": "k1", "id": 5}
    assert keys.read("k1") == {"save": "k1", "id": 5}
    assert keys.list(where={"id__gte": 5, "pk": "k1"}) == [{"save": "k1", "id": 5}]
    assert keys.update("k1", {"id": 6}) == {"save": "k1", "id": 6}
    assert keys.delete("k1") is True


# -- where keys: column or column__lookup, never a path -------------------------------------------


@dataclass
class Connection:
    name: str
    secret: str
    id: Optional[int] = None


@dataclass
class Job:
    connection: Connection
    title: str
    booked_on: Optional[datetime.date] = None
    starts_at: Optional[datetime.datetime] = None
    hours: float = 0
    tags: list = field(default_factory=list)
    id: Optional[int] = None


@pytest.fixture
def jobs(tenant_db):
    tables = register_tables(tenant_db, [(Connection, "connections"), (Job, "jobs")])
    connections, jobs = tables["connections"], tables["jobs"]
    one = connections.create({"name": "one", "secret": "s3cr3t"})
    two = connections.create({"name": "two", "secret": "hunter2"})
    utc = datetime.UTC
    jobs.batch_create(
        [
            Job(
                connection=one.id,
                title="deploy",
                booked_on=datetime.date(2024, 3, 1),
                starts_at=datetime.datetime(2024, 3, 1, 9, 30, tzinfo=utc),
                hours=1.5,
            ),
            Job(
                connection=one.id,
                title="backup",
                booked_on=datetime.date(2024, 7, 14),
                starts_at=datetime.datetime(2024, 7, 14, 22, 0, tzinfo=utc),
                hours=3,
            ),
            Job(connection=two.id, title="rotate keys", hours=0.5),
        ]
    )
    return jobs, one, two


ALLOWED = {
    "exact": ({"title__exact": "deploy"}, ["deploy"]),
    "iexact": ({"title__iexact": "DEPLOY"}, ["deploy"]),
    "gt": ({"hours__gt": 1.5}, ["backup"]),
    "gte": ({"hours__gte": 1.5}, ["deploy", "backup"]),
    "lt": ({"hours__lt": 1.5}, ["rotate keys"]),
    "lte": ({"hours__lte": 1.5}, ["deploy", "rotate keys"]),
    "in": ({"title__in": ["deploy", "backup", "nope"]}, ["deploy", "backup"]),
    "contains": ({"title__contains": "ck"}, ["backup"]),
    "icontains": ({"title__icontains": "KEY"}, ["rotate keys"]),
    "startswith": ({"title__startswith": "de"}, ["deploy"]),
    "istartswith": ({"title__istartswith": "DE"}, ["deploy"]),
    "endswith": ({"title__endswith": "up"}, ["backup"]),
    "iendswith": ({"title__iendswith": "UP"}, ["backup"]),
    "range": ({"hours__range": (1, 2)}, ["deploy"]),
    "isnull": ({"booked_on__isnull": True}, ["rotate keys"]),
    "year": ({"booked_on__year": 2024}, ["deploy", "backup"]),
    "month-gte": ({"booked_on__month__gte": 6}, ["backup"]),
    "hour": ({"starts_at__hour": 9}, ["deploy"]),
    "date": ({"starts_at__date": datetime.date(2024, 7, 14)}, ["backup"]),
    "week_day-in": ({"booked_on__week_day__in": [6]}, ["deploy"]),  # 2024-03-01 is a Friday
    "fk": ({"connection": "one"}, ["deploy", "backup"]),
    "fk-column": ({"connection_id__gt": 0}, ["deploy", "backup", "rotate keys"]),
    "fk-in-rows": ({"connection__in": ["two"]}, ["rotate keys"]),
    "fk-isnull": ({"connection__isnull": False}, ["deploy", "backup", "rotate keys"]),
    "pk": ({"pk__in": [1, 3]}, ["deploy", "rotate keys"]),
    "F-column": ({"hours__gt": F("id")}, ["deploy", "backup"]),
}


@pytest.mark.parametrize("case", ALLOWED, ids=list(ALLOWED))
def test_where_takes_a_column_and_a_lookup(jobs, case):
    table, one, two = jobs
    where, expected = ALLOWED[case]
    rows = {"one": one, "two": two}
    where = {
        k: (rows[v] if v in ("one", "two") else v)
        if isinstance(v, str)
        else ([rows.get(x, x) for x in v] if isinstance(v, list) else v)
        for k, v in where.items()
    }
    assert [j.title for j in table.list(where=where)] == expected
    assert [j.title for j in table.list(where=Q(**where))] == expected


REFUSED_WHERE = {
    "fk-path": ({"connection__secret__startswith": "s"}, "'secret' is not a lookup"),
    "fk-column": ({"connection__secret": "s3cr3t"}, "'secret' is not a lookup"),
    "fk-id": ({"connection__id": 1}, "'id' is not a lookup"),
    "fk-path-in-Q": (Q(connection__secret__startswith="s"), "'secret' is not a lookup"),
    "fk-path-in-nested-Q": (~Q(title="x") | (Q(hours=1) & Q(connection__name="one")), "'name' is not a lookup"),
    "F-path": ({"title": F("connection__secret")}, "F('connection__secret') names no column"),
    "F-path-in-expression": ({"hours__gt": F("connection__id") + 1}, "F('connection__id') names no column"),
    "F-unknown": ({"hours__gt": F("nope")}, "F('nope') names no column"),
    "regex": ({"title__regex": "^d"}, "'regex' is not a lookup"),
    "iregex": ({"title__iregex": "^d"}, "'iregex' is not a lookup"),
    "part-of-a-float": ({"hours__year": 2024}, "'year' is not a lookup"),
    "text-lookup-on-fk": ({"connection__startswith": "1"}, "'startswith' is not a lookup"),
    "two-parts": ({"booked_on__year__month": 1}, "'month' is not a lookup"),
    "two-lookups": ({"hours__gte__lt": 1}, "'lt' after 'gte'"),
    "text-lookup-after-part": ({"booked_on__day__contains": 1}, "'contains' is not a lookup"),
    "empty-lookup": ({"title__": "x"}, "'' is not a lookup"),
    "json-key": ({"tags__0": "x"}, "'0' is not a lookup"),
}


@pytest.mark.parametrize("case", REFUSED_WHERE, ids=list(REFUSED_WHERE))
def test_where_refuses_paths_and_other_lookups_before_any_sql(jobs, tenant_db, case):
    table, _, _ = jobs
    where, reason = REFUSED_WHERE[case]
    for call in (lambda: table.list(where=where), lambda: table.count(where)):
        with no_sql(tenant_db), pytest.raises(ValueError) as caught:
            call()
        message = str(caught.value)
        assert message.startswith("invalid where for table 'jobs': "), message
        assert reason in message, message
        if "is not a lookup" in reason:
            assert "a key is column or column__lookup" in message, message
            assert "cannot follow a foreign key" in message, message


def test_the_refusal_lists_what_the_column_allows(jobs, tenant_db):
    table, _, _ = jobs
    with pytest.raises(ValueError) as caught:
        table.list(where={"connection__secret": "x"})
    assert "lookups of column connection_id: exact, gt, gte, lt, lte, in, isnull" in str(caught.value)
    with pytest.raises(ValueError) as caught:
        table.list(where={"title__regex": "x"})
    assert (
        "lookups of column title: exact, iexact, gt, gte, lt, lte, in, contains, icontains, startswith, "
        "istartswith, endswith, iendswith, range, isnull"
    ) in str(caught.value)
    with pytest.raises(ValueError) as caught:
        table.list(where={"booked_on__nope": 1})
    assert (
        "parts of column booked_on: year, iso_year, quarter, month, week, week_day, iso_week_day, day "
        "(then exact, gt, gte, lt, lte, in, range)"
    ) in str(caught.value)


def test_q_holds_column_conditions_only(jobs, tenant_db):
    table, _, _ = jobs
    subquery = Exists(table.model.objects.filter(hours__gt=1))
    with no_sql(tenant_db), pytest.raises(ValueError, match="a Q in where holds column conditions"):
        table.list(where=Q(subquery))


@pytest.mark.parametrize(
    "order_by", ["connection__secret", "connection__name DESC", ["title", "-connection__id"], "booked_on__year"]
)
def test_order_by_takes_columns_only(jobs, tenant_db, order_by):
    table, _, _ = jobs
    with (
        no_sql(tenant_db),
        pytest.raises(
            ValueError,
            match=r"order_by takes a column, not a lookup or a path "
            r"through a foreign key: 'connection__\w+'|"
            r"'booked_on__year'",
        ),
    ):
        table.list(order_by=order_by)
    assert [j.title for j in table.list(order_by="connection DESC, hours")] == ["rotate keys", "deploy", "backup"]
