"""``--json`` of the commands that list or report: the documented shape, and nothing else on stdout.

docs/operations.md ("JSON output") documents each shape; scripts pipe the
output to ``jq``, so stdout must parse as JSON even when the command fails
or shows a progress bar (stderr holds those), and the key names are the
same across commands (``slug``, ``server``, ``status``, ``dialect``, ``ok``,
``error``).
"""

from __future__ import annotations

import io
import json

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db.migrations.recorder import MigrationRecorder

from tenant_schema import create_index
from tenant_schema.lifecycle.archive import purge_tenant
from tenant_schema.lifecycle.register import register_tenant
from tenant_schema.models import Tenant

from .conftest import new_tenant_id

pytestmark = pytest.mark.django_db(transaction=True)

RESULT_KEYS = {"slug", "ok", "error"}  # every per-tenant result


def run_json(*args, fails: bool = False):
    """Run a command with ``--json``; its stdout parsed (it must parse even when the command fails)."""
    out, err = io.StringIO(), io.StringIO()
    if fails:
        with pytest.raises(CommandError):
            call_command(*args, "--json", stdout=out, stderr=err)
    else:
        call_command(*args, "--json", stdout=out, stderr=err)
    return json.loads(out.getvalue())


@pytest.fixture
def tenants(server_key):
    """``tenants(count=1)``: ready tenants on each live server, purged afterwards."""
    made: list[Tenant] = []

    def make(count: int = 1) -> list[Tenant]:
        new = [register_tenant(new_tenant_id(), server=server_key) for _ in range(count)]
        made.extend(new)
        return new

    yield make
    for tenant in Tenant.objects.filter(pk__in=[t.pk for t in made]):
        tenant.database.close()
        purge_tenant(tenant)


def test_tenant_register(db_access):
    slug = new_tenant_id()
    try:
        data = run_json("tenant_register", slug, "--server", "default", "--name", "Acme Ltd")
        assert data == {
            "slug": slug,
            "name": "Acme Ltd",
            "status": "ready",
            "server": "default",
            "dialect": "sqlite",
            "database": Tenant.objects.get(slug=slug).database_name,
        }
    finally:
        purge_tenant(slug)


def test_tenant_tables(tenants):
    (tenant,) = tenants()
    name = create_index(tenant.database, "tenantapp_note", ["title"])
    data = run_json("tenant_tables", tenant.slug)
    assert set(data) == {"slug", "status", "server", "dialect", "database", "tables"}
    assert (data["slug"], data["status"], data["server"]) == (tenant.slug, "ready", tenant.server)
    tables = {table["name"]: table["indexes"] for table in data["tables"]}
    assert {"name": name, "columns": ["title"], "unique": False} in tables["tenantapp_note"]
    assert all(set(index) == {"name", "columns", "unique"} for indexes in tables.values() for index in indexes)


def test_tenant_dialects(db_access):
    data = {row["dialect"]: row for row in run_json("tenant_dialects")}
    assert {"sqlite", "postgres", "mysql", "cockroach"} <= set(data)
    assert data["postgres"]["schemes"][:2] == ["postgres", "postgresql"]
    assert set(data["sqlite"]) == {"dialect", "schemes", "plugin", "distribution", "version"}
    assert data["sqlite"]["distribution"] == "tenant-schema"


def test_tenant_migrate(tenants):
    behind, broken, current = sorted(tenants(3), key=lambda t: t.slug)
    call_command("migrate", "tenantapp", "0001_initial", database=behind.database.alias, verbosity=0)
    behind.database.close()
    recorder = MigrationRecorder(broken.database.connection)  # its tables exist, its history says otherwise
    recorder.record_unapplied("tenantapp", "0002_note_pinned")
    recorder.record_unapplied("tenantapp", "0001_initial")
    broken.database.close()
    slugs = [behind.slug, broken.slug, current.slug]

    data = run_json("tenant_migrate", *slugs, "--verify", "--progress", fails=True)  # the bar goes to stderr
    assert set(data) == {"results", "summary"}
    assert data["summary"] == {"total": 3, "migrated": 1, "up_to_date": 1, "failed": 1, "drifted": 1}
    results = data["results"]
    assert [r["slug"] for r in results] == slugs, "sorted by slug"
    assert all(set(r) == RESULT_KEYS | {"result", "applied", "connected", "drift"} for r in results)
    assert results[0] == {
        "slug": behind.slug,
        "ok": True,
        "result": "migrated",
        "applied": ["tenantapp.0002_note_pinned"],
        "connected": True,
        "drift": False,
        "error": None,
    }
    assert (results[1]["ok"], results[1]["result"], results[1]["drift"]) == (False, "failed", True)
    assert results[1]["error"].startswith(("OperationalError", "ProgrammingError"))
    assert (results[2]["ok"], results[2]["result"], results[2]["applied"]) == (True, "up_to_date", [])

    data = run_json("tenant_migrate", current.slug)  # the registry knew: no connection
    assert data["results"][0]["connected"] is False
    assert data["summary"]["failed"] == 0


def test_tenant_command(tenants):
    ok, broken = sorted(tenants(2), key=lambda t: t.slug)
    data = run_json(
        "tenant_command", "tenant_probe", "--print", "--fail-in", broken.slug, "--tenant", ok.slug, "--tenant",
        broken.slug, fails=True,
    )  # fmt: skip
    assert data["summary"] == {"total": 2, "succeeded": 1, "failed": 1}
    assert data["results"] == [
        {
            "slug": ok.slug,
            "ok": True,
            "error": None,
            "output": f"tenant={ok.slug} database=tenant:{ok.slug} notes=0 all=False\nprinted in {ok.slug}\n",
            "stderr": f"stderr of {ok.slug}\n",
        },
        {
            "slug": broken.slug,
            "ok": False,
            "error": f"told to fail in {broken.slug}",
            "output": "",
            "stderr": "",
        },
    ]
    # One tenant: the same shape.
    data = run_json("tenant_command", "tenant_probe", "--tenant", ok.slug)
    assert [r["slug"] for r in data["results"]] == [ok.slug] and data["summary"]["succeeded"] == 1


def test_tenant_rekey(db_access):
    Tenant.objects.create(slug="orphan", server="gone", database_name="tstest_orphan", status=Tenant.Status.READY)
    (result,) = run_json("tenant_rekey", fails=True)
    assert set(result) == RESULT_KEYS | {"server", "role", "result"}
    assert (result["slug"], result["ok"], result["result"], result["server"]) == ("orphan", False, "failed", "gone")
