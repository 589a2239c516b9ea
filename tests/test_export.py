"""tenant_export / tenant_import: a tenant to an engine-neutral file and back, onto any engine, verified.

Every export and import here runs against live servers (SQLite files,
PostgreSQL with database and schema isolation, MariaDB), with rows in every
tenant-app model and in a table registered at run time from a dataclass
with awkward values (``fill`` and ``snapshot`` of tests/test_move.py).
"""

from __future__ import annotations

import dataclasses
import datetime
import decimal
import json
import math
import os
import threading
import tracemalloc
import uuid
import zipfile
from pathlib import Path
from typing import Optional

import pytest
from django.core.management.base import CommandError

from tenant_schema import (
    ImportFailed,
    InvalidExport,
    TenantNotFound,
    TenantSchemaError,
    UnknownServer,
    archive_tenant,
    drop_abandoned_imports,
    drop_table,
    export_tenant,
    import_tenant,
    register_table,
    register_tables,
    tenant_context,
)
from tenant_schema.databases import database_name
from tenant_schema.lifecycle.archive import purge_tenant
from tenant_schema.lifecycle.exchange import ExportStep, ImportStep
from tenant_schema.lifecycle.move import _holder
from tenant_schema.migration_plan import migration_plan
from tenant_schema.models import Tenant
from tenant_schema.names import IMPORT_SLUG_RE
from tenant_schema.ownership import read_marker
from tenant_schema.registry import get_tenant
from tenant_schema.servers import get_server
from tenant_schema.testing import unique_slug
from tests.tenantapp.helpers import run_command
from tests.tenantapp.models import Category, Note
from tests.tenantapp.tables import Payment

from .conftest import require_live_server
from .test_move import (  # noqa: F401 - tenants: the fixture ``sources`` wraps
    CRASHING,
    PAYMENTS,
    UTC,
    Extra,
    crash_child,
    database_exists,
    fill,
    snapshot,
    tenants,
)

pytestmark = pytest.mark.django_db(transaction=True)


@dataclasses.dataclass
class Reading:
    """The value types ``Payment`` lacks: floats, times of day, UUIDs."""

    ratio: float
    at: datetime.time
    key: uuid.UUID
    weight: Optional[float] = None
    id: int | None = None


READINGS = [
    Reading(ratio=0.1, at=datetime.time(23, 59, 59, 500000), key=uuid.UUID(int=2**128 - 1), weight=-1.5e-300),
    Reading(ratio=2.5e10, at=datetime.time(0, 0), key=uuid.UUID(int=0)),
]

ROUND_TRIPS = [("sqlite", "pg"), ("pg", "mysql"), ("mysql", "sqlite"), ("pgschema", "sqlite"), ("sqlite", "pgschema")]
PAYMENT_SPEC = [(Payment, PAYMENTS)]


@pytest.fixture
def sources(tenants):  # noqa: F811 - tests/test_move.py's fixture
    """``sources(server)``: a ready tenant, dropped afterwards (``tenants`` of tests/test_move.py)."""
    return tenants


@pytest.fixture
def imported(db_access):
    """Slugs of the tenants a test imports: purged afterwards, with what an interrupted import of them left."""
    slugs: list[str] = []
    yield slugs
    for row in Tenant.objects.filter(slug__in=slugs):
        row.database.close()
        purge_tenant(row)
    for row in Tenant.objects.filter(name__in=[f"import of {slug}" for slug in slugs]):
        row.database.close()
        purge_tenant(row)


def exported(tenant: Tenant, tmp_path: Path, **options) -> Path:
    path = tmp_path / f"{tenant.slug}.zip"
    export_tenant(tenant, path, tables=PAYMENT_SPEC, **options)
    return path


def registry_state() -> list[tuple]:
    return sorted(Tenant.objects.values_list("slug", "status", "server", "database_name", "maintenance"))


def import_row(slug: str) -> Tenant:
    """The reserved ``import-<hex>`` row an import of ``slug`` works on."""
    return Tenant.objects.get(name=f"import of {slug}")


# -- round trips between engines -------------------------------------------------------------------

LONG = "ø" * 70_000 + "\n\t\"'\\ end"


@pytest.mark.parametrize("source, target", ROUND_TRIPS, ids=[f"{a}-to-{b}" for a, b in ROUND_TRIPS])
def test_an_export_imports_onto_another_engine_unchanged(sources, imported, tmp_path, source, target):
    require_live_server(target)
    tenant = sources(source)
    fill(tenant)
    register_table(tenant.database, Payment, PAYMENTS).create(
        Payment(
            amount=decimal.Decimal("99999999.9999"),
            paid_at=datetime.datetime(1970, 1, 1, tzinfo=UTC),
            memo=LONG,
            details={"deep": [{"ключ": ["值", None, 1.25, -3]}], "": ""},
            raw=b"",  # empty, not NULL
        )
    )
    register_table(tenant.database, Reading, "readings").batch_create(READINGS)
    with tenant_context(tenant):  # a row deleted from the end: the import's keys continue after it
        next_note = Note.objects.create(title="deleted").pk + 1
        Note.objects.filter(pk=next_note - 1).delete()
    before = snapshot(tenant)
    export_steps: list[ExportStep] = []
    path = tmp_path / "tenant.zip"
    export = export_tenant(tenant, path, batch_size=2, tables=PAYMENT_SPEC, progress=export_steps.append)
    slug = unique_slug("imp")
    imported.append(slug)
    import_steps: list[ImportStep] = []
    hidden = []

    def watch(step: ImportStep) -> None:
        import_steps.append(step)
        if step.phase == "copied":  # filled, not yet verified: not a tenant yet
            hidden.append(not Tenant.objects.filter(slug=slug).exists())
            with pytest.raises(TenantNotFound):
                get_tenant(slug)

    result = import_tenant(path, slug=slug, server=target, batch_size=2, progress=watch)

    copy = get_tenant(slug)
    assert (copy.status, copy.server, copy.maintenance, copy.name) == ("ready", target, False, tenant.name)
    assert copy.uid != tenant.uid and read_marker(copy.database).tenant_uid == copy.uid.hex
    assert copy.migrated_to == migration_plan().fingerprint
    assert snapshot(copy) == before  # every model, the run-time tables and django_migrations, value for value
    with tenant_context(copy):
        assert Note.objects.create(title="after the import").pk == next_note
        Note.objects.filter(title="after the import").delete()
    assert register_table(slug, Reading, "readings").list() == [
        dataclasses.replace(r, id=i) for i, r in enumerate(READINGS, 1)
    ]
    assert snapshot(tenant) == before  # the source is untouched
    assert hidden == [True]
    checks = {c.table: (c.rows, c.checksum) for c in result.tables}
    assert checks == {c.table: (c.rows, c.checksum) for c in export.tables}
    assert set(checks) >= {"tenantapp_note", "tenantapp_tag_notes", "django_migrations", "audit_event", PAYMENTS}
    assert checks[PAYMENTS][0] == 5 and checks["tenantapp_note"][0] == 4
    assert [s.phase for s in export_steps][:2] == ["export", "rows"] and export_steps[-1].phase == "exported"
    assert sum(s.rows for s in export_steps if s.phase == "rows") == sum(c.rows for c in export.tables)
    assert [s.phase for s in import_steps][:3] == ["target", "copy", "rows"] and import_steps[-1].phase == "imported"
    assert {s.table for s in import_steps if s.phase == "verified"} == set(checks)
    assert result.source["slug"] == tenant.slug and result.source["dialect"] == get_server(source).dialect.name
    with tenant_context(copy):  # generated keys continue after the imported rows
        assert Note.objects.create(title="after the import").pk > max(pk for pk, *_ in before["notes"])
        assert Category.objects.create(name="new").pk > max(pk for pk, _ in before["categories"])


# -- the file ---------------------------------------------------------------------------------------


@dataclasses.dataclass
class Blob:
    body: str
    id: int | None = None


def test_the_export_is_streamed_and_documents_itself(sources, imported, tmp_path):
    """A table of 16 MB goes through 250-row batches both ways; the ZIP is plain and its manifest says what it is."""
    tenant = sources("sqlite")
    blobs = register_table(tenant.database, Blob, "blobs")
    text = "x" * 2000
    for start in range(0, 8000, 1000):
        blobs.batch_create([{"body": f"{i:05d}{text}"} for i in range(start, start + 1000)])
    table_bytes = 8000 * len(text)
    path = tmp_path / "big.zip"
    steps: list[ExportStep] = []
    slug = unique_slug("big")
    imported.append(slug)
    tracemalloc.start()
    try:
        export_tenant(tenant, path, batch_size=250, progress=steps.append)
        export_peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.reset_peak()
        import_tenant(path, slug=slug, server="sqlite", batch_size=250)
        import_peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert [s.rows for s in steps if s.phase == "rows" and s.table == "blobs" and s.rows] == [250] * 32
    assert export_peak < table_bytes / 4 and import_peak < table_bytes / 4, (export_peak, import_peak, table_bytes)
    assert register_table(slug, Blob, "blobs").count() == 8000

    with zipfile.ZipFile(path) as archive:
        assert archive.testzip() is None
        assert archive.namelist()[-1] == "manifest.json"  # written last
        assert "tables/blobs.jsonl" in archive.namelist()
        manifest = json.loads(archive.read("manifest.json"))
        with archive.open("tables/blobs.jsonl") as member:
            first, *rest = member.read().decode().splitlines()
    assert (manifest["format"], manifest["version"]) == ("tenant-schema-export", 1)
    assert manifest["tenant"] == {
        "slug": tenant.slug,
        "name": "",
        "uid": tenant.uid.hex,
        "server": "sqlite",
        "dialect": "sqlite",
        "database": tenant.database_name,
    }
    assert manifest["migrations"]["fingerprint"] == migration_plan().fingerprint
    assert ["tenantapp", "0002_note_pinned"] in manifest["migrations"]["applied"]
    tables = {t["name"]: t for t in manifest["tables"]}
    assert tables["blobs"]["defined_by"] == {
        "kind": "table",
        "class": "tests.test_export.Blob",
        "table": "blobs",
        "pk": "id",
    }
    assert tables["tenantapp_note"]["defined_by"] == {"kind": "model", "model": "tenantapp.Note"}
    assert tables["tenantapp_tag_notes"]["defined_by"] == {"kind": "model", "model": "tenantapp.Tag_notes"}
    assert tables["django_migrations"]["defined_by"] == {"kind": "migrations"}
    assert tables["blobs"]["columns"] == [
        {"name": "body", "type": "TextField", "null": False, "primary_key": False},
        {"name": "id", "type": "BigAutoField", "null": False, "primary_key": True},
    ]
    assert (tables["blobs"]["rows"], tables["blobs"]["member"], len(rest) + 1) == (8000, "tables/blobs.jsonl", 8000)
    assert json.loads(first) == [f"00000{text}", 1]  # values in the order of the columns
    assert len(tables["blobs"]["checksum"]) == 64


def test_values_are_written_through_their_fields(sources, tmp_path):
    tenant = sources("pg")
    fill(tenant)
    path = exported(tenant, tmp_path)
    with zipfile.ZipFile(path) as archive:
        lines = archive.read(f"tables/{PAYMENTS}.jsonl").decode().splitlines()
        columns = [c["name"] for c in table_entry(json.loads(archive.read("manifest.json")), PAYMENTS)["columns"]]
    assert columns == ["amount", "booked_on", "details", "id", "memo", "paid_at", "raw", "settled"]
    assert [json.loads(line) for line in lines] == [
        [
            "-1234567890.1230",  # a decimal as a string, every digit kept
            "1999-12-31",
            [{"z": [1, 2.5, None], "a": {"ünï": "cødé 🚀"}, "flag": True}],  # JSON as JSON, in a one-element array
            1,
            "",  # not null
            "2024-02-29T18:29:59.123456+00:00",  # 23:59:59 at +05:30, in UTC with its offset
            "AP9ieXRlcw==",  # bytes in base64
            True,
        ],
        ["0.0001", None, None, 2, None, "2030-01-01T00:00:00+00:00", None, False],  # SQL NULL: null
        ["42.0000", None, [[]], 3, "zażółć gęślą jaźń — 日本語", "2001-09-09T01:46:40+00:00", None, False],
        ["0.0001", None, [None], 4, None, "2030-01-01T00:00:00+00:00", None, False],  # JSON null: [null]
    ]


@pytest.mark.parametrize("engine", ["sqlite", "pg", "pgschema", "mysql", "pgbouncer", "pgbouncerschema"])
def test_the_export_reads_one_snapshot_while_the_tenant_is_served(sources, tmp_path, engine):
    """A note written (by another connection) once the export has begun is not in it, on any engine."""
    require_live_server(engine)
    tenant = sources(engine)
    fill(tenant)
    committed = threading.Event()
    seen = []

    def write() -> None:
        try:
            with tenant_context(tenant.slug):
                Note.objects.create(title="written during the export")
            committed.set()
        finally:
            tenant.database.close()

    writer = threading.Thread(target=write)

    def during(step: ExportStep) -> None:
        if step.phase == "export":  # the snapshot is taken: its first reads are done
            seen.append(get_tenant(tenant.slug).maintenance)
            writer.start()
            seen.append(committed.wait(1.5))

    path = tmp_path / "served.zip"
    export_tenant(tenant, path, tables=PAYMENT_SPEC, progress=during)
    writer.join(30)
    # Served all along: no maintenance mode. PostgreSQL and MariaDB commit the write meanwhile; SQLite's
    # writer waits for the export's read transaction to end.
    assert seen == [False, engine != "sqlite"]
    assert committed.is_set()
    with zipfile.ZipFile(path) as archive:
        notes = archive.read("tables/tenantapp_note.jsonl").decode()
        rows = {t["name"]: t["rows"] for t in json.loads(archive.read("manifest.json"))["tables"]}
    assert "written during the export" not in notes and rows["tenantapp_note"] == 4
    with tenant_context(tenant.slug):
        assert Note.objects.filter(title="written during the export").exists()


def test_every_value_comes_back_through_its_field():
    """What no engine round trip above covers: durations, non-finite floats, big integers, bytes as memoryview."""
    from django.db import models

    from tenant_schema.schema.portable import decoder, encoder
    from tenant_schema.schema.transfer import JSON_NULL, canonical

    cases = [
        (models.DurationField(), datetime.timedelta(days=-1, hours=2, microseconds=5), "-P0DT21H59M59.999995S"),
        (models.DurationField(), datetime.timedelta(days=400, microseconds=500000), "P400DT00H00M00.500000S"),
        (models.FloatField(), math.inf, "inf"),
        (models.FloatField(), -math.inf, "-inf"),
        (models.FloatField(), 2.0**-1074, 5e-324),
        (models.BigIntegerField(), -(2**63), -(2**63)),
        (models.BinaryField(), memoryview(b"\x00\x01"), "AAE="),
        (models.DecimalField(max_digits=30, decimal_places=20), decimal.Decimal("1E-20"), "1E-20"),
        (models.DateTimeField(), datetime.datetime(2024, 1, 1, 5, 30, tzinfo=UTC), "2024-01-01T05:30:00+00:00"),
        (models.UUIDField(), "12345678-1234-5678-1234-567812345678", "12345678123456781234567812345678"),
        (models.JSONField(), {"a": [None, "", 1.5, {"ü": True}]}, [{"a": [None, "", 1.5, {"ü": True}]}]),
        (models.JSONField(null=True), JSON_NULL, [None]),
        (models.JSONField(null=True), None, None),
        (models.JSONField(), "null", ["null"]),  # a JSON string, not JSON null
        (models.CharField(max_length=5, null=True), "", ""),
        (models.CharField(max_length=5, null=True), None, None),
    ]
    for field, value, written in cases:
        encoded = json.loads(json.dumps(encoder(field)(value)))
        assert encoded == written, field
        assert canonical(field, decoder(field)(encoded)) == canonical(field, value), field
    nan = decoder(models.FloatField())(json.loads(json.dumps(encoder(models.FloatField())(math.nan))))
    assert math.isnan(nan)
    with pytest.raises(ValueError, match=r"a JSON column's value is null or a one-element array, not \{"):
        decoder(models.JSONField())({"a": 1})  # as an export before JSON values were wrapped wrote it


# -- what is refused before anything is created ------------------------------------------------------


def rewrite(path: Path, *, manifest=None, member: tuple[str, object] | None = None) -> Path:
    """A copy of the export with its manifest changed by ``manifest(dict)``, or a member's text by ``member``."""
    out = path.with_name(f"changed-{path.name}")
    with zipfile.ZipFile(path) as source, zipfile.ZipFile(out, "w") as target:
        for info in source.infolist():
            data = source.read(info.filename)
            if info.filename == "manifest.json" and manifest is not None:
                changed = json.loads(data)
                manifest(changed)
                data = json.dumps(changed).encode()
            elif member is not None and info.filename == member[0]:
                data = member[1](data.decode()).encode()
            target.writestr(info.filename, data)
    return out


def table_entry(manifest: dict, name: str) -> dict:
    return next(t for t in manifest["tables"] if t["name"] == name)


def _without_pinned(manifest: dict) -> None:
    manifest["migrations"]["fingerprint"] = "0" * 32
    manifest["migrations"]["applied"].remove(["tenantapp", "0002_note_pinned"])


def _with_a_future_migration(manifest: dict) -> None:
    manifest["migrations"]["fingerprint"] = "0" * 32
    manifest["migrations"]["applied"].append(["tenantapp", "0003_future"])


REFUSALS = {
    "unknown-version": (
        lambda m: m.update(version=2),
        InvalidExport,
        r"is tenant-schema-export version 2; this tenant-schema reads version 1 only",
    ),
    "not-an-export": (
        lambda m: m.update(format="some-backup"),
        InvalidExport,
        r"is not a tenant-schema-export file \(its manifest's format is 'some-backup'\)",
    ),
    "incomplete-manifest": (
        lambda m: m.pop("migrations"),
        InvalidExport,
        r"its manifest is incomplete or malformed: no 'migrations'",
    ),
    "behind-the-plan": (
        _without_pinned,
        TenantSchemaError,
        r"was exported at another migration plan: this site has tenantapp\.0002_note_pinned, which the exported "
        r"tenant had not applied: migrate the source \(`manage.py tenant_migrate .*`\) and export it again",
    ),
    "ahead-of-the-plan": (
        _with_a_future_migration,
        TenantSchemaError,
        r"the exported tenant had applied tenantapp\.0003_future, which this site does not have: migrate this site",
    ),
    "unknown-class": (
        lambda m: table_entry(m, PAYMENTS)["defined_by"].update({"class": "tests.nowhere.Gone"}),
        TenantSchemaError,
        r"table 'payments' of .* is a run-time table of class 'tests\.nowhere\.Gone', which cannot be imported here",
    ),
    "unknown-model": (
        lambda m: table_entry(m, "tenantapp_note")["defined_by"].update({"model": "tenantapp.Gone"}),
        TenantSchemaError,
        r"defined by model 'tenantapp\.Gone', which is not a model of this site's tenant apps \(tenantapp\.Category, ",
    ),
    "other-columns": (
        lambda m: table_entry(m, "tenantapp_note")["columns"].pop(2),
        TenantSchemaError,
        r"table 'tenantapp_note' has the columns body, id, title in .* but body, id, pinned, title here",
    ),
}


@pytest.mark.parametrize("case", list(REFUSALS))
def test_an_export_that_cannot_be_imported_is_refused_before_anything_is_created(sources, tmp_path, case):
    tenant = sources("sqlite")
    fill(tenant)
    change, error, message = REFUSALS[case]
    path = rewrite(exported(tenant, tmp_path), manifest=change)
    slug = unique_slug("no")
    before = registry_state()
    with pytest.raises(error, match=message):
        import_tenant(path, slug=slug, server="pg")
    assert registry_state() == before
    assert not database_exists("pg", database_name(slug, get_server("pg")))


def test_a_taken_slug_an_unknown_server_and_a_file_that_is_no_export_are_refused(sources, tmp_path):
    tenant = sources("sqlite")
    path = exported(tenant, tmp_path)
    garbage = tmp_path / "garbage.zip"
    garbage.write_bytes(b"not a zip file at all")
    before = registry_state()
    with pytest.raises(TenantSchemaError, match=rf"tenant '{tenant.slug}' is already registered: import under another"):
        import_tenant(path)  # the export's own slug
    with pytest.raises(UnknownServer, match="unknown tenant server 'nowhere'"):
        import_tenant(path, slug=unique_slug("no"), server="nowhere")
    with pytest.raises(InvalidExport, match=r"garbage\.zip is not a ZIP file, so not a tenant-schema-export file"):
        import_tenant(garbage, slug=unique_slug("no"))
    with pytest.raises(InvalidExport, match=r"missing\.zip: no such file"):
        import_tenant(tmp_path / "missing.zip", slug=unique_slug("no"))
    with pytest.raises(ValueError, match=r"slugs of the form import-<16 hex digits> are reserved"):
        import_tenant(path, slug="import-0123456789abcdef")
    assert registry_state() == before


def test_what_cannot_be_exported_is_refused_before_anything_is_written(sources, tmp_path):
    tenant = sources("sqlite")
    register_tables(tenant.database, [(Extra, "extra")])
    tenant.database.forget_tables()  # registered by "another process": this one cannot account for it
    path = tmp_path / "refused.zip"
    with pytest.raises(TenantSchemaError, match=r"holds tables tenant-schema cannot account for: extra .*then export"):
        export_tenant(tenant, path)

    @dataclasses.dataclass
    class Local:  # a class no import could find again
        label: str
        id: int | None = None

    register_table(tenant.database, Local, "local")
    with pytest.raises(
        TenantSchemaError, match=r"table 'local' is registered from .* cannot be imported by its dotted"
    ):
        export_tenant(tenant, path, tables=[(Extra, "extra")])
    assert list(tmp_path.iterdir()) == []  # not even a partial file
    drop_table(tenant.database, "local")
    archive_tenant(tenant)  # an archived tenant is exported (its data is kept)
    export_tenant(tenant, path, tables=[(Extra, "extra")])
    assert zipfile.ZipFile(path).testzip() is None
    with pytest.raises(ValueError, match="batch_size must be a positive whole number of rows, not 0"):
        export_tenant(tenant, path, batch_size=0)


# -- failures after the import began ---------------------------------------------------------------


def failing_import(path: Path, slug: str, server: str, error, message: str) -> None:
    """The import fails as expected, and leaves the registry as it was and no database behind."""
    before = registry_state()
    target = []

    def note_target(step: ImportStep) -> None:
        if step.phase == "target":
            row = import_row(slug)
            target.append((row.server, row.database_name))

    with pytest.raises(error, match=message):
        import_tenant(path, slug=slug, server=server, progress=note_target, batch_size=2)
    assert registry_state() == before
    assert target and not database_exists(*target[0])  # built, then dropped


def test_a_corrupted_export_fails_verification_and_leaves_nothing(sources, tmp_path):
    tenant = sources("sqlite")
    fill(tenant)
    path = exported(tenant, tmp_path)
    changed = rewrite(path, member=("tables/tenantapp_note.jsonl", lambda text: text.replace("note 3", "note X")))
    failing_import(
        changed,
        unique_slug("bad"),
        "pg",
        ImportFailed,
        r"verification failed, so nothing was imported from .*changed-.*\.zip: 'tenantapp_note': checksums differ "
        r"\(export [0-9a-f]{12}, target [0-9a-f]{12}\)",
    )
    broken = rewrite(path, member=("tables/tenantapp_note.jsonl", lambda text: text.replace("]\n", "\n", 2)))
    failing_import(broken, unique_slug("bad"), "mysql", InvalidExport, r"tables/tenantapp_note\.jsonl, line 1: ")


def test_a_value_the_target_cannot_hold_is_named_and_nothing_is_left(sources, tmp_path):
    tenant = sources("sqlite")
    fill(tenant)
    with tenant_context(tenant):
        Note.objects.create(title="x" * 250)  # SQLite does not enforce a varchar's length
    failing_import(
        exported(tenant, tmp_path),
        unique_slug("long"),
        "pg",
        ImportFailed,
        r"table 'tenantapp_note', row id=\d+, column 'title': 250 characters, longer than its max_length 200",
    )


def test_a_run_time_table_whose_class_changed_is_refused_and_nothing_is_left(sources, tmp_path):
    tenant = sources("sqlite")
    fill(tenant)
    path = rewrite(
        exported(tenant, tmp_path),
        manifest=lambda m: table_entry(m, PAYMENTS)["columns"].append({"name": "currency", "type": "TextField"}),
    )
    failing_import(path, unique_slug("cls"), "mysql", TenantSchemaError, r"table 'payments' has the columns amount, ")


def test_a_slug_registered_while_the_import_ran_stops_it_and_leaves_nothing(sources, imported, tmp_path):
    tenant = sources("sqlite")
    fill(tenant)
    path = exported(tenant, tmp_path)
    slug = unique_slug("race")
    imported.append(slug)
    filled, go, outcome, target = threading.Event(), threading.Event(), [], []

    def hold(step: ImportStep) -> None:
        if step.phase == "copied":
            row = import_row(slug)
            target.append((row.server, row.database_name))
            filled.set()
            go.wait(30)

    def first() -> None:
        try:
            outcome.append(import_tenant(path, slug=slug, server="pg", progress=hold))
        except Exception as exc:  # noqa: BLE001 - checked below
            outcome.append(exc)
        finally:
            tenant.database.close()

    thread = threading.Thread(target=first)
    thread.start()
    try:
        assert filled.wait(60)
        winner = import_tenant(path, slug=slug, server="mysql")  # the same slug, meanwhile
    finally:
        go.set()
        thread.join(60)
    (error,) = outcome
    assert isinstance(error, TenantSchemaError)
    assert str(error) == (
        f"tenant {slug!r} was registered while the import ran, so nothing was imported: import under another slug"
    )
    assert not database_exists(*target[0]) and not Tenant.objects.filter(name=f"import of {slug}").exists()
    assert get_tenant(slug).server == "mysql" and snapshot(winner.tenant)["notes"] == snapshot(tenant)["notes"]


def test_a_leftover_import_row_never_drops_a_database_another_row_marked(sources):
    """Two imports of one slug that chose one database name at once: the loser's row goes, the database stays."""
    tenant = sources("sqlite")
    fill(tenant)
    before = snapshot(tenant)
    row = Tenant.objects.create(
        slug=f"import-{os.urandom(8).hex()}",
        name="import of a loser",
        server=tenant.server,
        database_name=tenant.database_name,
        status="failed",  # no process holds it
    )
    assert drop_abandoned_imports() == [row]
    assert not Tenant.objects.filter(pk=row.pk).exists()
    assert database_exists(tenant.server, tenant.database_name) and snapshot(tenant) == before


# -- crashes ----------------------------------------------------------------------------------------

IMPORT_CRASH = (
    CRASHING
    + r"""
from tenant_schema.lifecycle import exchange
exchange.import_tenant(cfg["file"], slug=cfg["slug"], server=cfg["server"], batch_size=2)
print("finished")
"""
)

#: (module, function, after it ran?, on its nth call): the steps of an import.
IMPORT_CRASHES = {
    "after-recording-the-row": ("lifecycle.exchange", "_record_import", True, 1),
    "while-provisioning": ("lifecycle.provision", "provision", True, 1),  # its registry transaction not committed
    "after-building-the-target": ("lifecycle.exchange", "_build_target", True, 1),
    "after-preparing-the-target": ("lifecycle.exchange", "_prepare", True, 1),
    "mid-copy": ("schema.transfer", "write_batch", False, 3),
    "after-verifying": ("lifecycle.exchange", "_verify", True, 1),
    "right-after-publishing": ("lifecycle.exchange", "_publish", True, 1),
}


@pytest.mark.parametrize("source, target", [("sqlite", "pg"), ("pg", "mysql")], ids=["sqlite-to-pg", "pg-to-mysql"])
@pytest.mark.parametrize("where", list(IMPORT_CRASHES))
def test_an_import_killed_at_any_step_leaves_no_tenant_and_a_rerun_imports(
    sources, imported, tmp_path, source, target, where
):
    require_live_server(target)
    tenant = sources(source)
    fill(tenant)
    before = snapshot(tenant)
    path = exported(tenant, tmp_path)
    slug = unique_slug("kill")
    imported.append(slug)
    crash_child(slug, target, *IMPORT_CRASHES[where], script=IMPORT_CRASH, file=str(path))

    if where == "right-after-publishing":
        row = get_tenant(slug)  # published: complete and verified, nothing else left
        assert (row.status, row.server) == ("ready", target) and snapshot(row) == before
        assert not Tenant.objects.filter(name=f"import of {slug}").exists()
        with pytest.raises(TenantSchemaError, match="is already registered"):
            import_tenant(path, slug=slug, server=target)
        return
    assert not Tenant.objects.filter(slug=slug).exists()  # no tenant: nothing half-made is visible or served
    dead = import_row(slug)  # only the reserved row says an import was under way
    assert IMPORT_SLUG_RE.fullmatch(dead.slug) and dead.status in ("provisioning", "moving") and dead.held_by
    assert database_exists(dead.server, dead.database_name) == (where != "after-recording-the-row")
    result = import_tenant(path, slug=slug, server=target)  # drops what the dead import left, then imports
    assert not Tenant.objects.filter(pk=dead.pk).exists()
    assert snapshot(result.tenant) == before
    assert read_marker(result.tenant.database).tenant_uid == result.tenant.uid.hex != dead.uid.hex
    assert [row.slug for row in Tenant.objects.filter(name=f"import of {slug}")] == []
    if (dead.server, dead.database_name) != (target, result.tenant.database_name):
        assert not database_exists(dead.server, dead.database_name)


def test_tenant_import_cleanup_drops_only_what_dead_imports_left(sources, imported, tmp_path):
    tenant = sources("sqlite")
    path = exported(tenant, tmp_path)
    slug = unique_slug("gone")
    imported.append(slug)
    crash_child(slug, "pg", "lifecycle.exchange", "_prepare", True, 1, script=IMPORT_CRASH, file=str(path))
    dead = import_row(slug)
    assert database_exists("pg", dead.database_name)
    live = Tenant.objects.create(  # an import this (live) process is running
        slug=f"import-{os.urandom(8).hex()}",
        name=f"import of {unique_slug('live')}",
        server="pg",
        database_name="tstest_live_import",
        held_by=_holder(),
    )
    try:
        out, _ = run_command("tenant_import", "--cleanup")
        assert out == (
            f"Dropped {dead.slug!r} (database {dead.database_name!r} on 'pg'), left by an interrupted import.\n"
        )
        assert not database_exists("pg", dead.database_name) and not Tenant.objects.filter(pk=dead.pk).exists()
        assert Tenant.objects.filter(pk=live.pk).exists()
        out, _ = run_command("tenant_import", "--cleanup", "--json")
        assert json.loads(out) == {"dropped": []}
        assert drop_abandoned_imports() == []
    finally:
        live.delete()
    out, _ = run_command("tenant_import", "--cleanup")
    assert out == "No interrupted import left anything behind.\n"


# -- the commands -----------------------------------------------------------------------------------


def test_the_commands_print_each_table_and_its_verification(sources, imported, tmp_path, capsys):
    tenant = sources("sqlite")
    fill(tenant)
    path = tmp_path / "cmd.zip"
    out, _ = run_command(
        "tenant_export", tenant.slug, "-o", str(path), "--table", "tests.tenantapp.tables.Payment:payments"
    )
    lines = out.splitlines()
    assert lines[0] == (
        f"Exported tenant {tenant.slug!r} to {path} (tenant-schema-export version 1, {path.stat().st_size} bytes):"
    )
    assert "  tenantapp_note: 4 rows, verified (checksum " in out
    assert f"  {PAYMENTS}: 4 rows, verified (checksum " in out
    tables = [line for line in lines if line.startswith("  ")]
    assert lines[-1].startswith(f"{len(tables)} tables, {sum(int(line.split()[1]) for line in tables)} rows in ")
    assert "exporting" in capsys.readouterr().err  # the progress bar

    slug = unique_slug("cmd")
    imported.append(slug)
    out, _ = run_command("tenant_import", str(path), "--slug", slug, "--server", "mysql", "--batch-size", "2")
    lines = out.splitlines()
    copy = get_tenant(slug)
    assert lines[0] == (
        f"Imported {path} as tenant {slug!r} on 'mysql' ({copy.database_name}), "
        f"from tenant {tenant.slug!r} on 'sqlite' (sqlite):"
    )
    assert "  tenantapp_note: 4 rows imported, verified (checksum " in out
    assert lines[-1].startswith(f"Tenant {slug!r} is ready: ")
    assert "importing" in capsys.readouterr().err


def test_the_commands_json(sources, imported, tmp_path):
    tenant = sources("pg")
    fill(tenant)
    path = tmp_path / "json.zip"
    out, _ = run_command("tenant_export", tenant.slug, "-o", str(path), "--json", "--no-progress")
    export = json.loads(out)
    assert set(export) == {"tenant", "uid", "file", "format", "version", "tables", "rows", "bytes", "seconds"}
    assert (export["tenant"], export["uid"], export["file"]) == (tenant.slug, tenant.uid.hex, str(path))
    assert (export["format"], export["version"], export["bytes"]) == ("tenant-schema-export", 1, path.stat().st_size)
    note = next(t for t in export["tables"] if t["table"] == "tenantapp_note")
    assert note["rows"] == 4 and note["verified"] is True and len(note["checksum"]) == 64
    assert export["rows"] == sum(t["rows"] for t in export["tables"])

    slug = unique_slug("json")
    imported.append(slug)
    out, _ = run_command("tenant_import", str(path), "--slug", slug, "--json", "--no-progress")
    result = json.loads(out)
    copy = get_tenant(slug)
    assert set(result) == {"tenant", "uid", "server", "database", "file", "source", "tables", "rows", "seconds"}
    assert (result["tenant"], result["uid"], result["server"], result["database"]) == (
        slug,
        copy.uid.hex,
        "default",  # where the placement policy puts a new tenant
        copy.database_name,
    )
    assert result["source"] == {
        "slug": tenant.slug,
        "name": "",
        "uid": tenant.uid.hex,
        "server": "pg",
        "dialect": "postgres",
        "database": tenant.database_name,
    }
    assert [(t["table"], t["rows"], t["checksum"]) for t in result["tables"]] == [
        (t["table"], t["rows"], t["checksum"]) for t in export["tables"]
    ]


@pytest.mark.parametrize(
    "args, message",
    [
        (["tenant_export", "{slug}"], "the following arguments are required: -o/--output"),
        (["tenant_export", "no-such-tenant", "-o", "{tmp}/x.zip"], "no tenant 'no-such-tenant' is registered"),
        (["tenant_export", "{slug}", "-o", "{tmp}/no/dir/x.zip"], "cannot write {tmp}/no/dir/x.zip: there is no dir"),
        (["tenant_export", "{slug}", "-o", "{tmp}/x.zip", "--table", "no.such.Class"], "cannot import 'no.such"),
        (["tenant_import"], "name the export file to import (tenant_import FILE), or --cleanup"),
        (["tenant_import", "{tmp}/missing.zip"], "{tmp}/missing.zip: no such file"),
        (["tenant_import", "{export}"], "tenant '{slug}' is already registered: import under another slug"),
        (["tenant_import", "{export}", "--slug", "Bad Slug!"], "invalid tenant slug 'Bad Slug!'"),
        (["tenant_import", "{export}", "--slug", "fresh-x", "--server", "nowhere"], "unknown tenant server 'nowhere'"),
        (["tenant_import", "{export}", "--batch-size", "0", "--slug", "fresh-y"], "batch_size must be a positive"),
        (["tenant_import", "{export}", "--cleanup"], "--cleanup takes no FILE, --slug, --server, --label or"),
    ],
)
def test_bad_input_is_one_line(sources, tmp_path, args, message):
    tenant = sources("sqlite")
    path = exported(tenant, tmp_path)
    values = {"slug": tenant.slug, "tmp": tmp_path, "export": path}
    before = registry_state()
    with pytest.raises(CommandError) as raised:
        run_command(*[a.format(**values) for a in args], "--no-progress")
    assert message.format(**values) in str(raised.value) and "\n" not in str(raised.value)
    assert registry_state() == before


@pytest.mark.parametrize("source, target", [("pg", "sqlite"), ("sqlite", "mysql")])
def test_a_generated_column_is_exported_and_computed_again_on_import(sources, imported, tmp_path, source, target):
    """Its values are in the export (and verified on import), but the importing engine computes them."""
    from tests.tenantapp.tables import Priced

    require_live_server(target)
    tenant = sources(source)
    register_table(tenant.database, Priced, "priced").batch_create([{"label": "abc"}, {"label": ""}])
    path = tmp_path / "priced.zip"
    export_tenant(tenant, path, tables=[(Priced, "priced")])
    with zipfile.ZipFile(path) as archive:
        assert archive.read("tables/priced.jsonl").decode().splitlines() == ['[1,"abc",3]', '[2,"",0]']
    slug = unique_slug("imp")
    imported.append(slug)
    result = import_tenant(path, slug=slug, server=target)
    assert {c.table: c.rows for c in result.tables}["priced"] == 2
    rows = register_table(slug, Priced, "priced").list()
    assert sorted((r.label, r.label_length) for r in rows) == [("", 0), ("abc", 3)]
