"""tenant_move: a live tenant copied to another server, verified, switched; nothing lost, nothing dropped unasked.

Every move here runs between live servers (SQLite files, PostgreSQL with
database and schema isolation, MariaDB, and a second PostgreSQL cluster when
``./run test`` started one), with rows in every tenant-app model and in a
table registered at run time from a dataclass with awkward values.
"""

from __future__ import annotations

import dataclasses
import datetime
import decimal
import enum
import io
import json
import threading
import time
from typing import Optional

import pytest
from django.conf import settings
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db.migrations.recorder import MigrationRecorder
from django.db.models import JSONField, Value

from tenant_schema import (
    MoveFailed,
    NotOurDatabase,
    TenantMoved,
    TenantSchemaError,
    TenantUnavailable,
    UnknownServer,
    create_index,
    create_indexes,
    current_tenant,
    drop_kept_copies,
    kept_copies,
    list_indexes,
    move_tenant,
    register_table,
    register_tables,
    tenant_context,
)
from tenant_schema.lifecycle.archive import archive_tenant, purge_tenant, set_maintenance
from tenant_schema.lifecycle.move import MoveStep
from tenant_schema.lifecycle.register import register_tenant
from tenant_schema.models import Tenant
from tenant_schema.ownership import read_marker
from tenant_schema.plugins import get_plugins
from tenant_schema.registry import get_tenant
from tenant_schema.schema.transfer import JSON_NULL, canonical
from tenant_schema.servers import get_server
from tenant_schema.testing import unique_slug
from tests.tenantapp.helpers import CHILD_ENV, CHILD_SETUP, ROOT, child_command
from tests.tenantapp.models import Category, Note, Tag
from tests.tenantapp.tables import Payment, Priced

from .conftest import require_live_server, require_server

pytestmark = pytest.mark.django_db(transaction=True)

#: The live engines; CockroachDB too when TENANT_SCHEMA_COCKROACH_URL names a cluster (tests/settings.py).
ENGINES = ["sqlite", "pg", "pgschema", "mysql"] + (["crdb"] if "crdb" in settings.TENANT_SCHEMA["SERVERS"] else [])
PAIRS = [(a, b) for a in ENGINES for b in ENGINES if a != b]
PAYMENTS = "payments"
UTC = datetime.UTC
KOLKATA = datetime.timezone(datetime.timedelta(hours=5, minutes=30))


@pytest.fixture(autouse=True)
def _quick_routing(settings):
    """No routing cache: each process sees maintenance mode at once, so a move waits only for writes in flight."""
    settings.TENANT_SCHEMA = {**settings.TENANT_SCHEMA, "ROUTING_CACHE_SECONDS": 0}


@pytest.fixture
def tenants(db_access):
    """``tenants(server)``: a ready tenant; afterwards it, its kept copies and any move rows are dropped."""
    made: list[Tenant] = []

    def make(server: str, slug: str | None = None) -> Tenant:
        require_live_server(server)
        tenant = register_tenant(slug or unique_slug("mv"), server=server)
        made.append(tenant)
        return tenant

    yield make
    for tenant in made:
        for row in Tenant.objects.filter(copy_of=tenant.uid):
            row.database.close()
            try:
                purge_tenant(row)
            except NotOurDatabase:
                row.delete()
        current = Tenant.objects.filter(pk=tenant.pk).first()
        if current is not None:
            current.database.close()
            purge_tenant(current)


AWKWARD = [
    Payment(
        amount=decimal.Decimal("-1234567890.1230"),
        paid_at=datetime.datetime(2024, 2, 29, 23, 59, 59, 123456, tzinfo=KOLKATA),
        memo="",
        details={"z": [1, 2.5, None], "a": {"ünï": "cødé 🚀"}, "flag": True},
        settled=True,
        booked_on=datetime.date(1999, 12, 31),
        raw=b"\x00\xffbytes",
    ),
    Payment(amount=decimal.Decimal("0.0001"), paid_at=datetime.datetime(2030, 1, 1, tzinfo=UTC), memo=None),
    Payment(
        amount=decimal.Decimal("42"),
        paid_at=datetime.datetime(2001, 9, 9, 1, 46, 40, tzinfo=UTC),
        memo="zażółć gęślą jaźń — 日本語",
        details=[],
        settled=False,
    ),
]


def fill(tenant: Tenant, notes: int = 5) -> None:
    """Rows in every tenant-app model (the many-to-many table too), in TENANT_TABLES and in ``payments``."""
    with tenant_context(tenant):
        food = Category.objects.create(name="food")
        Category.objects.create(name="empty")
        made = [Note.objects.create(title=f"note {i}", body="x" * i, pinned=i % 2 == 0) for i in range(notes)]
        Note.objects.filter(pk=made[0].pk).delete()  # a gap in the keys
        tag = Tag.objects.create(label="ünïcode", category=food)
        Tag.objects.create(label="no category")
        tag.notes.set(made[1:3])
    tdb = tenant.database
    tdb.table("audit_event").batch_create([{"id": 7, "action": "created"}, {"id": 9, "action": ""}])
    payments = register_table(tdb, Payment, PAYMENTS)
    payments.batch_create(AWKWARD)
    # JSON null, which Django reads as None as it does SQL NULL: stored the way Django documents.
    json_null = payments.create(AWKWARD[1]).id
    payments.model._base_manager.db_manager(tdb.alias).filter(pk=json_null).update(
        details=Value(None, output_field=JSONField())
    )
    create_indexes(tdb, [(PAYMENTS, "memo"), (PAYMENTS, ["paid_at", "id"], True)])  # after registration
    create_index(tdb, "tenantapp_note", ["pinned", "title"])  # on a tenant app's table too


def snapshot(tenant: Tenant) -> dict:
    """Everything the tenant holds, read through the ORM and the Table API."""
    tenant = get_tenant(tenant.slug)
    with tenant_context(tenant):
        data = {
            "notes": list(Note.objects.order_by("pk").values_list("pk", "title", "body", "pinned")),
            "categories": list(Category.objects.order_by("pk").values_list("pk", "name")),
            "tags": list(Tag.objects.order_by("pk").values_list("pk", "label", "category_id")),
            "links": sorted(Tag.notes.through.objects.values_list("tag_id", "note_id")),
        }
    tdb = tenant.database
    data["audit"] = [
        row if isinstance(row, dict) else dataclasses.asdict(row) for row in tdb.table("audit_event").list()
    ]
    payments = register_table(tdb, Payment, PAYMENTS)
    data["payments"] = [dataclasses.astuple(p) for p in payments.list()]
    rows = payments.model._base_manager.db_manager(tdb.alias)
    data["json null"] = sorted(rows.filter(details=None).values_list("pk", flat=True))
    data["sql null"] = sorted(rows.filter(details__isnull=True).values_list("pk", flat=True))
    data["migrations"] = sorted(
        MigrationRecorder.Migration.objects.using(tdb.alias).values_list("id", "app", "name", "applied")
    )
    return data


def database_exists(server: str, name: str) -> bool:
    srv = get_server(server)
    return bool(get_plugins().hook.tenant_schema_database_exists(dialect=srv.dialect, server=srv, name=name))


def alias(row: Tenant) -> str:
    """The connection alias of a registry row's database, registered."""
    row.database.ensure_alias()
    return row.database.alias


def moved(tenant: Tenant, server: str, **kwargs):
    return move_tenant(tenant, server, settle=kwargs.pop("settle", 0), **kwargs)


# -- moves between every pair of engines ---------------------------------------------------------


@pytest.mark.parametrize("source, target", PAIRS, ids=[f"{a}-to-{b}" for a, b in PAIRS])
def test_a_move_copies_everything_and_keeps_the_source(tenants, source, target):
    check_a_move(tenants, source, target)


def test_a_move_between_two_postgresql_servers_and_back(tenants):
    """pg and pg2 are two clusters: ``./run test`` starts the second (under CI=true a missing one fails)."""
    require_server("pg2")  # plain, so a missing TENANT_SCHEMA_PG2_URL skips (fails under CI=true)
    tenant = check_a_move(tenants, "pg", "pg2")
    with tenant_context(tenant):
        Note.objects.create(title="written on pg2")
    back = moved(tenant, "pg")  # its usual name on pg is free again: the first copy was dropped
    assert back.target == ("pg", f"tstest_{tenant.slug.replace('-', '_')}")
    # And out again: the copy just kept on pg2 holds the usual name there, so the new database gets another.
    again = moved(tenant, "pg2")
    assert again.target[1] != back.kept.database_name and again.target[1].startswith("tstest_move_")
    with tenant_context(tenant.slug):
        assert Note.objects.filter(title="written on pg2").exists()
    assert {(c.server, c.database_name) for c in kept_copies(tenant)} == {back.source, again.source}


def check_a_move(tenants, source: str, target: str) -> Tenant:
    """Move a filled tenant from ``source`` to ``target`` and check all of it; the tenant, moved."""
    require_live_server(target)
    tenant = tenants(source)
    bystander = tenants(source)
    fill(tenant)
    fill(bystander, notes=2)
    # Rows deleted from the end: the source's counters stand past its last keys, and the target's follow them.
    with tenant_context(tenant):
        next_note = Note.objects.create(title="deleted").pk + 1
        Note.objects.filter(pk=next_note - 1).delete()
    payments = register_table(tenant.database, Payment, PAYMENTS)
    next_payment = payments.create(AWKWARD[1]).id + 1
    payments.delete(next_payment - 1)
    before, others = snapshot(tenant), snapshot(bystander)
    old = (tenant.server, tenant.database_name)
    steps: list[MoveStep] = []

    result = moved(tenant, target, batch_size=2, progress=steps.append)

    after = get_tenant(tenant.slug)
    assert (after.server, after.uid, after.status, after.maintenance) == (target, tenant.uid, "ready", False)
    assert after.migrated_to == tenant.migrated_to
    assert result.target == (target, after.database_name) and result.source == old
    assert snapshot(after) == before  # the data, the run-time table and django_migrations, via the ORM
    assert {c.table for c in result.tables} >= {
        "tenantapp_note",
        "tenantapp_category",
        "tenantapp_tag",
        "tenantapp_tag_notes",
        "django_migrations",
        "audit_event",
        PAYMENTS,
    }
    assert {c.table: c.rows for c in result.tables}["tenantapp_note"] == 4
    assert [s.phase for s in steps][:3] == ["target", "paused", "copy"] and steps[-1].phase == "switched"
    assert sum(s.rows for s in steps if s.phase == "rows") == sum(c.rows for c in result.tables)
    # The next generated key is the source's next one: past the copied rows, and past the deleted ones.
    with tenant_context(after):
        assert Note.objects.create(title="after the move").pk == next_note
        assert Category.objects.create(name="new").pk == max(pk for pk, _ in before["categories"]) + 1
    assert register_table(after.database, Payment, PAYMENTS).create(AWKWARD[1]).id == next_payment
    # The indexes created on a run-time table after it was registered are there too.
    assert {(i.columns, i.unique) for i in list_indexes(after.database, PAYMENTS)} >= {
        (("memo",), False),
        (("paid_at", "id"), True),
    }
    # On a tenant app's table: the model's own indexes are the target engine's (none of the source's, such as
    # PostgreSQL's _like ones, is carried as well), plus the one create_index added.
    fresh = tenants(target)
    assert {(i.columns, i.unique) for i in list_indexes(after.database, "tenantapp_note")} == {
        (i.columns, i.unique) for i in list_indexes(fresh.database, "tenantapp_note")
    } | {(("pinned", "title"), False)}
    # The source is kept, recorded as a copy with the tenant's marker, and nothing else moved.
    (kept,) = kept_copies(after)
    assert result.kept == kept and (kept.server, kept.database_name) == old and kept.status == "copy"
    assert database_exists(*old)
    assert read_marker(kept.database).tenant_uid == tenant.uid.hex
    assert snapshot(bystander) == others
    # --drop-source later drops that copy, and only it.
    assert drop_kept_copies(after) == [kept]
    assert not database_exists(*old) and not Tenant.objects.filter(pk=kept.pk).exists()
    assert database_exists(after.server, after.database_name) and snapshot(bystander) == others
    with tenant_context(after):
        assert Note.objects.filter(title="after the move").exists()
    return after


def test_the_checksum_is_the_same_whatever_the_engine_returns():
    """Values are normalised through their field: equal data gives equal checksums on every engine."""
    from django.db import models

    dec = models.DecimalField(max_digits=10, decimal_places=4)
    when = models.DateTimeField()
    flag = models.BooleanField()
    doc = models.JSONField()
    text = models.CharField(max_length=10, null=True)
    assert canonical(dec, decimal.Decimal("1.5000")) == canonical(dec, decimal.Decimal("1.5")) == "1.5"
    assert canonical(dec, decimal.Decimal("-0.00")) == "0"
    assert canonical(dec, decimal.Decimal("1E+2")) == "100"
    aware = datetime.datetime(2024, 1, 1, 5, 30, tzinfo=KOLKATA)
    assert canonical(when, aware) == canonical(when, datetime.datetime(2024, 1, 1, tzinfo=UTC))
    assert canonical(flag, 1) is True and canonical(flag, False) is False
    assert canonical(doc, {"b": 1, "a": [1, "ü"]}) == canonical(doc, {"a": [1, "ü"], "b": 1}) == '{"a":[1,"ü"],"b":1}'
    assert canonical(text, None) is None and canonical(text, "") == ""
    assert canonical(models.FloatField(), -0.0) == canonical(models.FloatField(), 0.0) == "0.0"
    assert canonical(doc, JSON_NULL) == "null" and canonical(doc, None) is None and canonical(doc, "null") != "null"
    assert canonical(models.BinaryField(), memoryview(b"\x00\xff")) == canonical(models.BinaryField(), b"\x00\xff")


# -- verification, values that do not fit ----------------------------------------------------------


def open_moves(tenant: Tenant) -> list[Tenant]:
    return list(Tenant.objects.filter(copy_of=tenant.uid))


@pytest.mark.parametrize("maintenance", [False, True], ids=["served", "in-maintenance"])
@pytest.mark.parametrize("tamper", ["change", "add"])
def test_a_verification_mismatch_aborts_and_leaves_the_tenant_as_it_was(tenants, tamper, maintenance):
    tenant = tenants("sqlite")
    fill(tenant)
    set_maintenance(tenant, maintenance)
    before = snapshot(tenant)
    targets = []

    def tamper_with_the_copy(step: MoveStep) -> None:
        """Between copy and verification: what a bug, or a write that slipped through, would do."""
        if step.phase != "copied":
            return
        move = Tenant.objects.get(copy_of=tenant.uid, status="moving")
        targets.append((move.server, move.database_name))
        notes = Note.objects.using(alias(move))
        if tamper == "change":
            notes.filter(pk=notes.order_by("pk").first().pk).update(title="tampered")
        else:
            notes.create(title="slipped in")

    expected = "checksums differ" if tamper == "change" else "4 rows on the source, 5 on the target"
    with pytest.raises(
        MoveFailed,
        match=rf"verification failed, so tenant .* stays on server 'sqlite': "
        rf"'tenantapp_note': {expected}",
    ):
        moved(tenant, "pg", progress=tamper_with_the_copy)
    after = get_tenant(tenant.slug)
    assert (after.server, after.database_name, after.maintenance) == (tenant.server, tenant.database_name, maintenance)
    assert snapshot(after) == before
    assert targets and not database_exists(*targets[0])  # the half-written target is dropped
    assert open_moves(tenant) == []


@pytest.mark.parametrize(
    "write, message",
    [
        (
            lambda: Note.objects.create(title="x" * 250),
            r"table 'tenantapp_note', row id=\d+, column 'title': 250 characters, longer than its max_length 200",
        ),
        (
            lambda: register_table(current_tenant().database, Ticket, "tickets").batch_create([{"priority": 2**40}]),
            r"table 'tickets', row id=1, column 'priority': 1099511627776 is outside its range "
            r"\[-2147483648, 2147483647\] on PostgreSQL",
        ),
    ],
    ids=["too-long", "too-big"],
)
def test_a_value_the_target_cannot_hold_is_named_never_truncated(tenants, write, message):
    """SQLite stores what PostgreSQL refuses: the move stops naming table, column and row key."""
    tenant = tenants("sqlite")
    fill(tenant)
    with tenant_context(tenant):
        write()  # SQLite enforces neither a varchar length nor a 32-bit integer
    before = snapshot(tenant)
    with pytest.raises(MoveFailed, match=message):
        moved(tenant, "pg")
    after = get_tenant(tenant.slug)
    assert (after.server, after.maintenance) == ("sqlite", False)
    assert snapshot(after) == before and open_moves(tenant) == []


@dataclasses.dataclass
class Code:
    code: str
    id: Optional[int] = None


@pytest.mark.parametrize("value", ["deep-json", "nul-json"])
def test_json_a_target_engine_rejects_is_named(tenants, value):
    """MariaDB refuses JSON nested deeper than 32 levels, PostgreSQL a NUL character: the move says which row."""
    source, target, details = {
        "deep-json": ("pg", "mysql", json.loads("[" * 40 + "]" * 40)),
        "nul-json": ("sqlite", "pg", {"text": "a\x00b"}),
    }[value]
    require_live_server(target)
    tenant = tenants(source)
    fill(tenant)
    table = register_table(tenant.database, Payment, PAYMENTS)
    bad = table.create(dataclasses.replace(AWKWARD[1], details=details)).id
    before = snapshot(tenant)
    with pytest.raises(MoveFailed, match=rf"table '{PAYMENTS}', row id={bad}, column 'details': "):
        moved(tenant, target)
    assert get_tenant(tenant.slug).server == source and snapshot(tenant) == before


def test_an_aware_datetime_for_a_column_without_a_time_zone_is_named(tenants, settings):
    """A site running USE_TZ = False whose SQLite text holds a time with its offset (written by other
    software): Django reads it aware, MariaDB's DATETIME has no zone to keep. Named, never shifted."""
    require_live_server("mysql")
    tenant = tenants("sqlite")
    fill(tenant)
    settings.USE_TZ = False
    with tenant.database.connection.cursor() as cursor:
        cursor.execute(f"UPDATE {PAYMENTS} SET paid_at = '2024-01-01 05:30:00+05:30' WHERE id = 1")
    with pytest.raises(MoveFailed, match=rf"table '{PAYMENTS}', row id=1, column 'paid_at': .*timezone-aware"):
        moved(tenant, "mysql")
    assert get_tenant(tenant.slug).server == "sqlite"


@dataclasses.dataclass
class Document:
    body: dict  # a JSON column that is not nullable
    id: Optional[int] = None


@pytest.mark.parametrize("source, target", [("sqlite", "mysql"), ("mysql", "pg"), ("pg", "sqlite")])
def test_json_null_in_a_column_that_is_not_nullable_is_moved(tenants, source, target):
    """Django reads its JSON null as None, which it would store as SQL NULL: the move writes JSON null."""
    require_live_server(target)
    tenant = tenants(source)
    documents = register_table(tenant.database, Document, "documents")
    documents.batch_create([Document({"a": 1}), Document({})])
    rows = documents.model._base_manager.db_manager(tenant.database.alias)
    rows.filter(pk=2).update(body=Value(None, output_field=JSONField()))
    result = moved(tenant, target, tables=[(Document, "documents")])
    assert {c.table: c.rows for c in result.tables}["documents"] == 2
    moved_rows = register_table(tenant.slug, Document, "documents").model._base_manager.db_manager(
        get_tenant(tenant.slug).database.alias
    )
    assert sorted(moved_rows.values_list("pk", "body")) == [(1, {"a": 1}), (2, None)]
    assert list(moved_rows.filter(body=None).values_list("pk", flat=True)) == [2]  # JSON null, as on the source


@pytest.mark.parametrize("source, target", [("sqlite", "pg"), ("pg", "mysql"), ("mysql", "sqlite")])
def test_a_generated_column_is_computed_again_on_the_target(tenants, source, target):
    """The engine computes a generated column; the move copies the columns it is computed from and checks it."""
    require_live_server(target)
    model = Priced
    tenant = tenants(source)
    table = register_table(tenant.database, model, "priced")
    table.batch_create([{"label": "a"}, {"label": "ünïcode"}])
    result = moved(tenant, target, tables=[(model, "priced")])
    assert {c.table: c.rows for c in result.tables}["priced"] == 2
    rows = model._base_manager.db_manager(get_tenant(tenant.slug).database.alias)
    register_table(tenant.slug, model, "priced")
    assert sorted(rows.values_list("label", "label_length")) == [("a", 1), ("ünïcode", 7)]


def test_a_unique_text_index_mariadb_can_only_hold_by_prefix_is_named(tenants):
    """MariaDB indexes TEXT by its first 191 characters: two codes PostgreSQL keeps apart collide there."""
    require_live_server("mysql")
    tenant = tenants("pg")
    fill(tenant)
    codes = register_table(tenant.database, Code, "codes")
    create_index(tenant.database, "codes", "code", unique=True)
    codes.batch_create([Code("a" * 200 + "1"), Code("a" * 200 + "2")])
    with pytest.raises(MoveFailed, match=r"table 'codes', row id=2, column 'code': MariaDB refuses it: .*Duplicate"):
        moved(tenant, "mysql")
    assert get_tenant(tenant.slug).server == "pg" and codes.count() == 2


# -- writers during the move -----------------------------------------------------------------------


def test_every_write_acknowledged_during_a_move_is_there_afterwards(tenants):
    tenant = tenants("sqlite")
    fill(tenant)
    acknowledged, refused, failed = [], [], []
    stop = threading.Event()
    phase = ["before"]  # the move's last step, as its progress callback saw it

    def writer() -> None:
        i = 0
        while not stop.is_set():
            i += 1
            title, seen = f"w{i}", phase[0]
            try:
                with tenant_context(tenant.slug):  # the registry's row each time, as a request gets it
                    Note.objects.create(title=title)
                acknowledged.append((title, seen))
            except TenantUnavailable:  # a TenantMoved too: a write that began before the switch, after it
                refused.append(title)
            except Exception as exc:  # noqa: BLE001 - any other failure fails the test
                failed.append(repr(exc))
            time.sleep(0.002)

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        time.sleep(0.3)
        # The default settle: ROUTING_CACHE_SECONDS (0 here) + 1 s for writes in flight.
        result = move_tenant(tenant, "pg", progress=lambda step: phase.__setitem__(0, step.phase))
        time.sleep(0.3)
    finally:
        stop.set()
        thread.join(30)
    assert failed == []
    assert refused, "no write was attempted while writes were paused"
    seen = {phase for _, phase in acknowledged}
    assert {"before", "switched"} <= seen  # accepted before the move, and on the new database after it
    # None begun while the copy was made ("verified" is last before the switch: a write begun then may land
    # after it). "target" comes before writes pause: the target is built while they are still served.
    assert not seen & {"paused", "copy", "rows", "copied"}
    with tenant_context(tenant.slug):
        titles = set(Note.objects.values_list("title", flat=True))
    assert {title for title, _ in acknowledged} <= titles
    assert not (set(refused) & titles)  # a refused write left nothing behind
    assert result.write_pause >= 1


class OpenTransaction(threading.Thread):
    """A writer of the tenant's that inserts a note in a transaction and commits it only when told to."""

    def __init__(self, tenant: Tenant, title: str) -> None:
        super().__init__()
        self.tenant, self.title = tenant, title
        self.written, self.commit = threading.Event(), threading.Event()
        self.errors: list[str] = []

    def run(self) -> None:
        from django.db import connections, transaction

        try:
            with tenant_context(self.tenant.slug) as tenant, transaction.atomic(using=tenant.database.alias):
                Note.objects.create(title=self.title)
                self.written.set()
                self.commit.wait(60)
        except Exception as exc:  # noqa: BLE001 - the test reads it
            self.errors.append(repr(exc))
        finally:
            self.written.set()
            connections.close_all()


@pytest.mark.parametrize("source", ENGINES)
def test_a_transaction_that_wrote_before_writes_paused_is_waited_for_and_copied(tenants, source):
    """It commits a second after the pause: the copy waits for it (Dialect.wait_for_writers), so its row moves."""
    tenant = tenants(source)
    fill(tenant)
    writer = OpenTransaction(tenant, "committed after the pause")
    writer.start()
    assert writer.written.wait(30) and not writer.errors

    def progress(step: MoveStep) -> None:
        if step.phase == "paused":
            threading.Timer(1.0, writer.commit.set).start()

    target = "sqlite" if source != "sqlite" else "pg"
    result = moved(tenant, target, progress=progress)
    writer.join(30)
    assert writer.errors == []
    assert get_tenant(tenant.slug).server == target
    with tenant_context(tenant.slug):
        assert Note.objects.filter(title="committed after the pause").exists()
    assert result.write_pause >= 1  # the move waited for the commit


@pytest.mark.parametrize("source", ["sqlite", "pg", "mysql"])
def test_a_transaction_open_too_long_after_the_pause_stops_the_move(tenants, source, monkeypatch):
    from tenant_schema.lifecycle import move

    monkeypatch.setattr(move, "WRITERS_TIMEOUT_SECONDS", 0.5)
    tenant = tenants(source)
    fill(tenant)
    writer = OpenTransaction(tenant, "long transaction")
    writer.start()
    assert writer.written.wait(30) and not writer.errors
    try:
        with pytest.raises(MoveFailed, match=r"before its writes paused was still open after 0\.5 s, so it stays on"):
            moved(tenant, "mysql" if source != "mysql" else "pg")
    finally:
        writer.commit.set()
        writer.join(30)
    assert writer.errors == []
    row = get_tenant(tenant.slug)
    assert (row.server, row.database_name, row.maintenance) == (tenant.server, tenant.database_name, False)
    assert not Tenant.objects.filter(copy_of=tenant.uid).exists()  # the half-written target is gone
    with tenant_context(tenant.slug):
        assert Note.objects.filter(title="long transaction").exists()  # committed on the source, kept


def test_a_handle_from_before_the_move_refuses_to_write_to_the_kept_copy(tenants):
    tenant = tenants("sqlite")
    fill(tenant)
    stale_table = register_table(tenant.database, Payment, PAYMENTS)
    payments = stale_table.count()
    with tenant_context(tenant):
        moved(tenant, "mysql")
        with pytest.raises(TenantMoved, match=r"lives in .* on server 'mysql' now, not in .* on server 'sqlite'"):
            Note.objects.create(title="through the old binding")  # a long request or task begun before the move
    with pytest.raises(TenantMoved):
        stale_table.create({"amount": decimal.Decimal("1"), "paid_at": datetime.datetime(2020, 1, 1, tzinfo=UTC)})
    fresh = register_table(tenant.slug, Payment, PAYMENTS)
    fresh.create({"amount": decimal.Decimal("1"), "paid_at": datetime.datetime(2020, 1, 1, tzinfo=UTC)})
    assert fresh.count() == payments + 1
    with tenant_context(tenant.slug):
        Note.objects.create(title="through the registry")
    (kept,) = kept_copies(tenant)
    assert Note.objects.using(alias(kept)).filter(title__startswith="through").count() == 0


def test_maintenance_switched_off_during_the_copy_stops_the_switch(tenants):
    """From a review: an operator's `tenant_maintenance off` mid-move reopened writes that the switch would lose."""
    from tenant_schema.lifecycle.archive import set_maintenance

    tenant = tenants("sqlite")
    fill(tenant)
    before = snapshot(tenant)

    def reopen(step: MoveStep) -> None:
        if step.phase == "copied":
            set_maintenance(tenant.slug, False)

    with pytest.raises(MoveFailed, match="maintenance mode of tenant .* was switched off while it was being moved"):
        moved(tenant, "pg", progress=reopen)
    row = get_tenant(tenant.slug)
    assert (row.server, row.database_name) == (tenant.server, tenant.database_name) and open_moves(tenant) == []
    assert snapshot(row) == before


def test_a_handle_allowed_to_write_in_maintenance_mode_refuses_the_kept_copy_too(tenants):
    """From a review: maintenance_writes (migrations, tenant_context(maintenance=True)) skipped the moved check."""
    tenant = tenants("sqlite")
    fill(tenant)
    with tenant_context(tenant, maintenance=True):
        moved(tenant, "pg")
        with pytest.raises(TenantMoved):
            Note.objects.create(title="a repair begun before the move")
    (kept,) = kept_copies(tenant)
    assert not Note.objects.using(alias(kept)).filter(title__startswith="a repair").exists()


# -- bad input -----------------------------------------------------------------------------------------


class Priority(enum.IntEnum):
    LOW = 1
    HIGH = 2


@dataclasses.dataclass
class Ticket:
    priority: Priority  # a 32-bit integer column
    id: int | None = None


@dataclasses.dataclass
class Node:
    name: str
    parent: Optional[Node] = None  # a foreign key to its own table
    id: Optional[int] = None


@dataclasses.dataclass
class Extra:
    label: str
    id: int | None = None


def refused_before_anything(tenant: Tenant, call, error, match: str) -> None:
    with pytest.raises(error, match=match):
        call()
    row = Tenant.objects.get(pk=tenant.pk)
    assert (row.server, row.database_name, row.maintenance, row.status) == (
        tenant.server,
        tenant.database_name,
        False,
        "ready",
    )
    assert open_moves(tenant) == []


def test_bad_input_is_refused_before_anything_is_written(tenants):
    tenant = tenants("sqlite")
    fill(tenant)
    configured = ", ".join(sorted(settings.TENANT_SCHEMA["SERVERS"]))
    refused_before_anything(
        tenant, lambda: moved(tenant, "nowhere"), UnknownServer, rf"unknown tenant server 'nowhere'; .*{configured}"
    )
    refused_before_anything(
        tenant, lambda: moved(tenant, "sqlite"), TenantSchemaError, r"already on server 'sqlite' .*nothing to move"
    )
    refused_before_anything(tenant, lambda: moved(tenant, "pg", batch_size=0), ValueError, "batch_size")
    refused_before_anything(tenant, lambda: moved(tenant, "pg", progress=3), TypeError, "progress")
    with pytest.raises(TenantSchemaError, match="no tenant 'no-such-tenant'"):
        moved("no-such-tenant", "pg")


def test_a_source_behind_the_plan_or_with_unknown_tables_is_refused(tenants):
    tenant = tenants("sqlite")
    fill(tenant)
    register_tables(tenant.database, [(Extra, "extra")])[  # a table registered at run time, then forgotten:
        "extra"
    ].create({"label": "kept"})  # as another process registering it would leave it
    tenant.database.forget_tables()
    refused_before_anything(
        tenant,
        lambda: moved(tenant, "pg"),
        TenantSchemaError,
        r"holds tables tenant-schema cannot account for: extra, payments \(",
    )
    # Named, the tables move.
    moved(tenant, "pg", tables=[(Extra, "extra"), (Payment, PAYMENTS)])
    assert register_table(tenant.slug, Extra, "extra").list() == [Extra(label="kept", id=1)]

    behind = tenants("sqlite")
    MigrationRecorder.Migration.objects.using(alias(behind)).filter(name="0002_note_pinned").delete()
    refused_before_anything(
        behind, lambda: moved(behind, "pg"), TenantSchemaError, r"lacks tenantapp\.0002_note_pinned.*tenant_migrate"
    )


def test_only_ready_tenants_are_moved(tenants):
    archived = tenants("sqlite")
    archive_tenant(archived)
    with pytest.raises(TenantSchemaError, match=r"is archived, not ready.*tenant_restore"):
        moved(archived, "pg")
    failed = Tenant.objects.create(
        slug=unique_slug("failed"), server="sqlite", database_name="tstest_x", status="failed"
    )
    try:
        with pytest.raises(TenantSchemaError, match=r"is failed, not ready.*tenant_register"):
            moved(failed, "pg")
    finally:
        failed.delete()
    tenant = tenants("sqlite")
    moved(tenant, "pg")
    (kept,) = kept_copies(tenant)
    with pytest.raises(TenantSchemaError, match="is copy, not a tenant"):
        moved(kept, "mysql")
    with pytest.raises(TenantSchemaError, match="kept copy"):
        from tenant_schema import restore_tenant

        restore_tenant(kept)


def test_a_tenant_another_process_is_moving_is_refused(tenants):
    tenant = tenants("sqlite")
    fill(tenant)
    paused, go = threading.Event(), threading.Event()
    outcome = []

    def hold(step: MoveStep) -> None:
        if step.phase == "paused":
            paused.set()
            go.wait(30)

    def first() -> None:
        try:
            outcome.append(moved(tenant, "pg", progress=hold))
        except Exception as exc:  # noqa: BLE001 - checked below
            outcome.append(exc)

    thread = threading.Thread(target=first)
    thread.start()
    try:
        assert paused.wait(30)
        with pytest.raises(TenantSchemaError, match=r"is being moved to server 'pg' by process .*:\d+"):
            moved(tenant, "mysql")
    finally:
        go.set()
        thread.join(60)
    assert get_tenant(tenant.slug).server == "pg" and outcome[0].target[0] == "pg"


# -- crashes --------------------------------------------------------------------------------------------

#: A child that dies (as kill -9 would) at ``tenant_schema.<module>.<crash>``'s ``nth`` call, before or after it ran;
#: what it runs follows.
CRASHING = (
    CHILD_SETUP
    + r"""
import importlib
module = importlib.import_module("tenant_schema." + cfg["module"])
step, after, nth = cfg["crash"], cfg["after"], cfg["nth"]
original = getattr(module, step)
calls = []
def crashing(*args, **kwargs):
    calls.append(1)
    if len(calls) < nth:
        return original(*args, **kwargs)
    if after:
        original(*args, **kwargs)
    os._exit(3)  # kill -9: nothing runs after it
setattr(module, step, crashing)
"""
)
CRASH = (
    CRASHING
    + r"""
from tenant_schema.lifecycle import move
from tests.tenantapp.tables import Payment
move.move_tenant(cfg["slug"], cfg["server"], settle=0, batch_size=2, tables=[(Payment, "payments")])
print("finished")
"""
)

#: (module, function, after it ran?, on its nth call): every step of a move.
CRASHES = {
    "after-recording-the-move": ("lifecycle.move", "_claim_move", True, 1),
    "while-recording-the-move": ("lifecycle.move", "_record_move", True, 1),  # inside its transaction
    "before-marking-the-target": ("lifecycle.provision", "_mark_or_undo", False, 1),  # created, not marked
    "after-creating-the-target": ("lifecycle.move", "_build_target", True, 1),
    "after-pausing-writes": ("lifecycle.move", "_pause_writes", True, 1),
    "after-preparing-the-target": ("lifecycle.move", "_prepare_target", True, 1),
    "mid-copy": ("schema.transfer", "write_batch", False, 3),
    "after-verifying": ("lifecycle.move", "_verify", True, 1),
    "right-after-the-switch": ("lifecycle.move", "_switch", True, 1),
}


def crash_child(slug: str, target: str, module: str, step: str, after: bool, nth: int, script=CRASH, **extra) -> None:
    """Run ``script`` (``CRASHING`` and what it does) in a child that dies where it is told to."""
    import os
    import subprocess

    done = subprocess.run(
        child_command(script, slug, target, module=module, crash=step, after=after, nth=nth, **extra),
        cwd=ROOT,
        env={**os.environ, **CHILD_ENV},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 3, done.stderr  # died where it was told to


@pytest.mark.parametrize("source, target", [("sqlite", "pg"), ("pg", "mysql")], ids=["sqlite-to-pg", "pg-to-mysql"])
@pytest.mark.parametrize("where", list(CRASHES))
def test_a_move_killed_at_any_step_leaves_a_consistent_registry_and_a_rerun_finishes(tenants, source, target, where):
    require_live_server(target)
    tenant = tenants(source)
    fill(tenant)
    before = snapshot(tenant)
    crash_child(tenant.slug, target, *CRASHES[where])

    row = get_tenant(tenant.slug)
    assert row.status == "ready" and row.uid == tenant.uid
    if where == "while-recording-the-move":
        # Its transaction never committed: no trace, and a re-run starts afresh.
        assert (row.server, row.maintenance) == (tenant.server, False) and open_moves(tenant) == []
        moved(row, target)
        assert snapshot(row) == before
    elif where == "right-after-the-switch":
        # Switched: the registry points at the complete copy, writes accepted again, the source kept.
        assert (row.server, row.maintenance) == (target, False)
        assert [r.status for r in open_moves(tenant)] == ["copy"]
        assert snapshot(row) == before
        with pytest.raises(TenantSchemaError, match=f"already on server '{target}'"):
            moved(row, target)  # the re-run: there is nothing left to finish
    else:
        # Not switched: the registry points at the source, untouched; the move row says what was going on.
        assert (row.server, row.database_name) == (tenant.server, tenant.database_name)
        (move,) = open_moves(tenant)
        assert move.status in ("provisioning", "moving") and move.server == target and move.held_by
        # Writes pause after the target is built; from then on they stay refused until a re-run.
        assert row.maintenance == (
            where not in ("after-recording-the-move", "before-marking-the-target", "after-creating-the-target")
        )
        assert snapshot(row) == before
        if where == "before-marking-the-target" and not get_server(target).dialect.can_clone_databases:
            # A database created but never marked is nobody's as far as tenant-schema can tell: the re-run
            # refuses it, as registration does, until an operator who checked it claims it.
            with pytest.raises(NotOurDatabase, match=f"run `manage.py tenant_claim {move.slug}`"):
                moved(row, target)
            assert get_tenant(tenant.slug).maintenance is False and snapshot(row) == before
            call_command("tenant_claim", move.slug, stdout=io.StringIO())
        result = moved(row, target)  # takes over from the dead process and finishes
        assert result.target[0] == target
        row = get_tenant(tenant.slug)
        assert (row.server, row.maintenance) == (target, False)
        assert snapshot(row) == before
    assert [(r.status, r.server, r.database_name) for r in open_moves(tenant)] == [
        ("copy", tenant.server, tenant.database_name)
    ]


def test_a_rerun_to_another_server_discards_the_dead_move_first(tenants):
    tenant = tenants("sqlite")
    fill(tenant)
    before = snapshot(tenant)
    crash_child(tenant.slug, "pg", "schema.transfer", "write_batch", False, 2)
    (dead,) = open_moves(tenant)
    moved(tenant, "mysql")
    assert not database_exists(dead.server, dead.database_name)  # the dead move's half-written target
    assert get_tenant(tenant.slug).server == "mysql" and snapshot(tenant) == before
    assert [r.status for r in open_moves(tenant)] == ["copy"]


# -- the command -------------------------------------------------------------------------------------


def command(*args) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    call_command("tenant_move", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def test_tenant_move_prints_each_table_and_what_it_kept(tenants, capsys):
    tenant = tenants("sqlite")
    fill(tenant)
    register_table(tenant.database, Payment, PAYMENTS)
    out, _ = command(
        tenant.slug, "--to", "pg", "--batch-size", "2", "--table", "tests.tenantapp.tables.Payment:payments"
    )
    lines = out.splitlines()
    moved_to = get_tenant(tenant.slug)
    assert lines[0] == (
        f"Moved tenant {tenant.slug!r} from 'sqlite' ({tenant.database_name}) to 'pg' ({moved_to.database_name}):"
    )
    table_lines = [line for line in lines if line.startswith("  ")]
    assert "  tenantapp_note: 4 rows copied, verified (checksum " in "\n".join(table_lines)
    assert any(line.startswith(f"  {PAYMENTS}: 4 rows copied, verified (checksum ") for line in table_lines)
    assert any(line.startswith("  tenantapp_tag_notes: 2 rows copied") for line in table_lines)
    (kept,) = kept_copies(tenant)
    assert lines[-1] == (
        f"The source database {tenant.database_name!r} on 'sqlite' is kept as {kept.slug!r}; "
        f"drop it with 'tenant_move {tenant.slug} --drop-source'."
    )
    assert "copying" in capsys.readouterr().err  # the progress bar

    out, _ = command(tenant.slug, "--drop-source", "--json")
    assert json.loads(out) == {
        "tenant": tenant.slug,
        "dropped": [{"slug": kept.slug, "server": "sqlite", "database": tenant.database_name}],
    }
    out, _ = command(tenant.slug, "--drop-source")
    assert out == f"Tenant {tenant.slug!r} has no kept copies: nothing dropped.\n"


def test_tenant_move_json_and_drop_source_at_once(tenants):
    tenant = tenants("mysql")
    fill(tenant)
    out, _ = command(tenant.slug, "--to", "sqlite", "--json", "--drop-source", "--no-progress")
    result = json.loads(out)
    assert set(result) == {
        "tenant",
        "uid",
        "from",
        "to",
        "tables",
        "rows",
        "kept_copy",
        "source_dropped",
        "drop_error",
        "seconds",
        "write_pause_seconds",
    }
    assert result["from"] == {"server": "mysql", "database": tenant.database_name}
    assert result["to"]["server"] == "sqlite" and result["uid"] == tenant.uid.hex
    assert (result["kept_copy"], result["source_dropped"], result["drop_error"]) == (None, True, None)
    notes = next(t for t in result["tables"] if t["table"] == "tenantapp_note")
    assert notes["rows"] == 4 and notes["verified"] is True and len(notes["checksum"]) == 64
    assert result["rows"] == sum(t["rows"] for t in result["tables"])
    assert not database_exists("mysql", tenant.database_name) and kept_copies(tenant) == []


@pytest.mark.parametrize(
    "args, message",
    [
        (["{slug}"], "name the server to move to (--to SERVER), or --drop-source to drop kept copies"),
        (["{slug}", "--to", "nowhere"], "unknown tenant server 'nowhere'; configured servers: "),
        (["{slug}", "--to", "sqlite"], "is already on server 'sqlite'"),
        (["no-such-tenant", "--to", "pg"], "no tenant 'no-such-tenant' is registered"),
        (["{slug}", "--to", "pg", "--table", "no.such.Class"], "--table 'no.such.Class': cannot import"),
        (["{slug}", "--to", "pg", "--batch-size", "0"], "batch_size must be a positive whole number of rows, not 0"),
        (["{slug}", "--drop-source", "--batch-size", "5"], "--batch-size and --table go with --to"),
    ],
)
def test_tenant_move_errors_are_one_line(tenants, args, message):
    tenant = tenants("sqlite")
    with pytest.raises(CommandError) as raised:
        command(*[a.format(slug=tenant.slug) for a in args])
    assert message in str(raised.value) and "\n" not in str(raised.value)
    assert open_moves(tenant) == [] and get_tenant(tenant.slug).server == "sqlite"


@pytest.mark.parametrize("source, target", [("sqlite", "pg"), ("pg", "mysql"), ("mysql", "sqlite")])
def test_rows_that_refer_forward_to_their_own_table_are_copied(tenants, source, target):
    """A parent with a greater key than its child, in another batch: no foreign-key check trips half-way."""
    require_live_server(target)
    tenant = tenants(source)
    nodes = register_table(tenant.database, Node, "nodes")
    nodes.create({"id": 3, "name": "root"})  # the parent first, with the greater key
    nodes.batch_create([{"id": 1, "name": "leaf", "parent": 3}, {"id": 2, "name": "mid", "parent": 3}])
    nodes.create({"id": 4, "name": "loop", "parent": 4})
    result = moved(tenant, target, batch_size=1)
    assert {c.table: c.rows for c in result.tables}["nodes"] == 4
    moved_nodes = register_table(tenant.slug, Node, "nodes")
    assert [(n.id, n.parent) for n in moved_nodes.list()] == [(1, 3), (2, 3), (3, None), (4, 4)]
    assert moved_nodes.create({"name": "new", "parent": 1}).id == 5


def test_copied_rows_keep_auto_now_values_next_to_a_column_with_its_own_placeholder(tenant_db):
    """Seen in the move's own review: auto_now beside a BinaryField (its own SQL placeholder) could not be copied."""
    from django.db import models as dj

    from tenant_schema import django_private
    from tenant_schema.schema import transfer
    from tenant_schema.schema.ddl import register_table

    class Stamped(dj.Model):
        blob = dj.BinaryField()
        changed = dj.DateTimeField(auto_now=True)

        class Meta:
            apps = django_private.isolated_apps("move_raw_test")
            app_label = "move_raw_test"
            db_table = "stamped"

    table = register_table(tenant_db, Stamped)
    copy = transfer.TableCopy("stamped", table.model, table.model, set())
    then = datetime.datetime(2020, 2, 29, 12, 30, tzinfo=UTC)
    given = {"id": 7, "blob": b"\x00\xffraw", "changed": then}
    transfer.write_batch(copy, [tuple(given[f.attname] for f in copy.target_fields)], tenant_db)
    row = table.model._base_manager.using(tenant_db.alias).get(pk=7)
    assert (bytes(row.blob), row.changed) == (b"\x00\xffraw", then), "stored as given, not replaced by now()"
