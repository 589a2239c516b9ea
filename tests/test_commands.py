"""The ``tenant_*`` management commands, against every live server.

What an operator relies on: the commands change what they say they change
on the real server, are safe to re-run, keep going past a failing tenant,
never drop data without being told to, and fail with one readable line.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import OperationalError
from django.db.migrations.recorder import MigrationRecorder

from tenant_schema import create_index, hookimpl, list_tables
from tenant_schema.management.inspection import database_exists
from tenant_schema.models import Tenant
from tenant_schema.plugins import get_plugin_manager
from tests.tenantapp.helpers import run_command

from .conftest import new_tenant_id

ROOT = Path(__file__).resolve().parent.parent
NOTE_TABLE = "tenantapp_note"
FIRST, LAST = ("tenantapp", "0001_initial"), ("tenantapp", "0002_note_pinned")

pytestmark = pytest.mark.django_db(transaction=True)
run = run_command


@pytest.fixture
def register(server_key):
    """``register(slug=None, **options)``: ``tenant_register`` on this server; purged afterwards."""
    from tenant_schema.lifecycle.archive import purge_tenant

    made: list[str] = []

    def make(slug: str | None = None, *extra: str) -> Tenant:
        slug = slug or new_tenant_id()
        made.append(slug)
        run("tenant_register", slug, "--server", server_key, *extra)
        return Tenant.objects.get(slug=slug)

    yield make
    for tenant in Tenant.objects.filter(slug__in=made):
        purge_tenant(tenant)


def forget_history(tenant: Tenant) -> None:
    """Drift: the tenant's history says nothing was applied, but the tables exist."""
    recorder = MigrationRecorder(tenant.database.connection)
    for migration in (LAST, FIRST):
        recorder.record_unapplied(*migration)
    tenant.database.close()


def roll_back_last_migration(tenant: Tenant) -> None:
    """A tenant one migration behind: Django's ``migrate app 0001`` on the tenant's alias."""
    call_command("migrate", FIRST[0], FIRST[1], database=tenant.database.alias, verbosity=0)
    tenant.database.close()


def note_columns(tenant: Tenant) -> set[str]:
    connection = tenant.database.connection
    with connection.cursor() as cursor:
        return {c.name for c in connection.introspection.get_table_description(cursor, NOTE_TABLE)}


# -- register / list / tables / drop ------------------------------------------------


def test_register_list_tables_archive_purge(register, server_key):
    tenant = register(None, "--name", "Acme Ltd")
    assert tenant.status == Tenant.Status.READY
    assert tenant.name == "Acme Ltd"
    assert tenant.server == server_key
    tables = list_tables(tenant.database)
    assert NOTE_TABLE in tables

    out, _ = run("tenant_list")
    header, *rows = out.splitlines()
    assert header.split() == ["slug", "status", "server", "dialect", "tables"]
    assert [tenant.slug, "ready", server_key, tenant.dialect_name, str(len(tables))] in [r.split() for r in rows]

    out, _ = run("tenant_list", "--json")
    assert {
        "slug": tenant.slug,
        "status": "ready",
        "maintenance": False,
        "server": server_key,
        "dialect": tenant.dialect_name,
        "tables": len(tables),
    } in json.loads(out)

    # An index created after registration shows up: the listing is live.
    name = create_index(tenant.database, NOTE_TABLE, ["title"])
    out, _ = run("tenant_tables", tenant.slug)
    assert f"{tenant.slug}: {len(tables)} tables" in out
    assert f"  {NOTE_TABLE}\n" in out
    assert f"    {name} (title)\n" in out

    out, _ = run("tenant_drop", tenant.slug)
    assert "archived" in out
    tenant.refresh_from_db()
    assert tenant.status == Tenant.Status.ARCHIVED
    assert NOTE_TABLE in list_tables(tenant.database), "archiving keeps the data"

    out, _ = run("tenant_drop", tenant.slug, "--purge", "--noinput")
    assert "purged" in out
    assert not Tenant.objects.filter(slug=tenant.slug).exists()
    assert not database_exists(tenant)


def test_register_again_changes_nothing(register):
    tenant = register()
    tables = list_tables(tenant.database)
    again = register(tenant.slug)
    assert Tenant.objects.filter(slug=tenant.slug).count() == 1
    assert (again.pk, again.status, again.database_name) == (tenant.pk, Tenant.Status.READY, tenant.database_name)
    assert list_tables(again.database) == tables


def test_purge_asks_for_the_slug(register, monkeypatch):
    tenant = register()
    monkeypatch.setattr("builtins.input", lambda prompt: "yes")
    with pytest.raises(CommandError, match="cancelled"):
        run("tenant_drop", tenant.slug, "--purge")
    assert Tenant.objects.filter(slug=tenant.slug).exists()
    assert database_exists(tenant)

    monkeypatch.setattr("builtins.input", lambda prompt: "")
    with pytest.raises(CommandError, match="cancelled: nothing was typed"):
        run("tenant_drop", tenant.slug, "--purge")
    monkeypatch.setattr("builtins.input", lambda prompt: tenant.slug + "x")
    with pytest.raises(CommandError, match=f"cancelled: '{tenant.slug}x' was typed, not the slug '{tenant.slug}'"):
        run("tenant_drop", tenant.slug, "--purge")
    assert Tenant.objects.filter(slug=tenant.slug).exists()

    monkeypatch.setattr("builtins.input", lambda prompt: tenant.slug)
    out, _ = run("tenant_drop", tenant.slug, "--purge")
    assert "It cannot be undone" in out
    assert f"all the data of tenant '{tenant.slug}'" in out and "''s" not in out
    assert "database" in out and "dropped, registry row deleted" in out
    assert not Tenant.objects.filter(slug=tenant.slug).exists()
    assert not database_exists(tenant)


class FailingDrop:
    """A plugin whose DROP fails, as a server refusing it would."""

    @hookimpl(tryfirst=True)
    def tenant_schema_drop_database(self, dialect, server, name):
        raise OperationalError(f"cannot drop {name}: permission denied\n(second line of driver detail)")


def test_failed_purge_keeps_the_row_and_can_be_retried(register):
    tenant = register()
    pm = get_plugin_manager()
    pm.register(FailingDrop(), name="failing-drop")
    try:
        with pytest.raises(CommandError) as caught:
            run("tenant_drop", tenant.slug, "--purge", "--noinput")
    finally:
        pm.unregister(name="failing-drop")
    message = str(caught.value)
    assert "\n" not in message
    assert "permission denied" in message and "row is kept" in message
    assert Tenant.objects.filter(slug=tenant.slug).exists(), "never a database with no registry row"
    assert database_exists(tenant)

    run("tenant_drop", tenant.slug, "--purge", "--noinput")
    assert not Tenant.objects.filter(slug=tenant.slug).exists()
    assert not database_exists(tenant)


def test_a_tenant_without_database_is_listed_and_not_created(db_access):
    from tenant_schema.databases import database_name
    from tenant_schema.servers import get_server

    slug = new_tenant_id()  # as a provisioning that failed before CREATE DATABASE leaves it
    tenant = Tenant.objects.create(
        slug=slug,
        server="default",
        status=Tenant.Status.FAILED,
        database_name=database_name(slug, get_server("default")),
    )
    out, _ = run("tenant_list")
    assert [slug, "failed", "default", "sqlite", "-"] in [line.split() for line in out.splitlines()]
    with pytest.raises(CommandError, match=f"tenant '{slug}' \\(failed\\) has no database"):
        run("tenant_tables", slug)
    assert not database_exists(tenant), "looking must not create an empty SQLite file"
    out, _ = run("tenant_drop", slug, "--purge", "--noinput")
    assert "was never created (or was already gone), so nothing was dropped" in out
    assert not Tenant.objects.filter(slug=slug).exists()


# -- migrate ------------------------------------------------------------------------


@pytest.mark.parametrize("jobs", [1, 2])
def test_migrate_keeps_going_past_a_failure_and_exits_non_zero(register, jobs):
    broken, behind, current = register(), register(), register()
    slugs = [broken.slug, behind.slug, current.slug]

    out, _ = run("tenant_migrate", *slugs, "--jobs", str(jobs), "--no-progress")
    assert "3 tenants: 0 migrated, 3 up to date, 0 failed." in out

    forget_history(broken)  # behind the registry's back: only --verify looks; creating an existing table fails
    roll_back_last_migration(behind)  # 0002 is pending
    assert "pinned" not in note_columns(behind)

    with pytest.raises(CommandError) as caught:
        run("tenant_migrate", *slugs, "--jobs", str(jobs), "--no-progress", "--verify")
    assert str(caught.value) == f"1 of 3 tenants failed to migrate: {broken.slug}"
    assert "pinned" in note_columns(behind), "the tenant after the failing one was migrated"

    # Re-run: the migrated tenant is now up to date; the failure is still reported (its
    # recorded state was cleared when the drift was found, so no --verify is needed).
    out, err = io.StringIO(), io.StringIO()
    with pytest.raises(CommandError):
        call_command("tenant_migrate", *slugs, "--jobs", str(jobs), "--no-progress", stdout=out, stderr=err)
    assert "3 tenants: 0 migrated, 2 up to date, 1 failed." in out.getvalue()
    failures = err.getvalue().split("Failed tenants:\n", 1)[1]
    assert failures.startswith(f"  {broken.slug}: ")


def test_migrate_lists_what_it_applied(register):
    tenant = register()
    roll_back_last_migration(tenant)
    out, _ = run("tenant_migrate", tenant.slug, "--no-progress")
    assert f"{tenant.slug}: applied tenantapp.0002_note_pinned" in out
    assert "1 tenant: 1 migrated, 0 up to date, 0 failed." in out
    assert "pinned" in note_columns(tenant)


def test_migrate_shows_a_progress_bar(register, capsys):
    tenants = [register(), register()]
    run("tenant_migrate", *[t.slug for t in tenants], "--progress")
    assert "2/2" in capsys.readouterr().err


def test_a_failed_migration_is_one_line_its_traceback_only_at_v2(db_access):
    """Through manage.py: the failure's line and the summary; no traceback unless -v 2 asks for it."""
    from django.conf import settings

    from tenant_schema.lifecycle.archive import purge_tenant
    from tenant_schema.lifecycle.register import register_tenant

    registry = settings.DATABASES["default"]
    if "sqlite" not in registry["ENGINE"]:
        pytest.skip("the child process reaches the test registry through a SQLite file")
    broken = register_tenant(new_tenant_id(), server="default")
    try:
        forget_history(broken)
        env = {**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings"}
        env["TENANT_SCHEMA_REGISTRY_URL"] = f"sqlite:///{registry['NAME']}"
        command = [sys.executable, "-m", "django", "tenant_migrate", broken.slug, "--verify", "--no-progress"]
        quiet, verbose = (
            subprocess.run(command + extra, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
            for extra in ([], ["-v", "2"])
        )
        assert quiet.returncode == verbose.returncode == 1
        assert "Traceback" not in quiet.stderr
        assert f"  {broken.slug}: OperationalError: table " in quiet.stderr
        assert quiet.stderr.splitlines()[-1] == f"CommandError: 1 of 1 tenant failed to migrate: {broken.slug}"
        assert "1 tenant: 0 migrated, 0 up to date, 1 failed." in quiet.stdout
        assert "    Traceback (most recent call last):" in verbose.stderr
    finally:
        purge_tenant(broken)


# -- errors -------------------------------------------------------------------------

ERROR_CASES = [
    (["tenant_register", "Bad Slug"], "invalid tenant slug 'Bad Slug'"),
    (["tenant_register", "good-slug", "--server", "nowhere"], "unknown tenant server 'nowhere'"),
    (["tenant_tables", "trailing-hyphen-"], "invalid tenant slug"),
    (["tenant_tables", "no-such-tenant"], "no-such-tenant"),
    (["tenant_drop", "no-such-tenant"], "no-such-tenant"),
    (["tenant_drop", "no-such-tenant", "--purge", "--noinput"], "no-such-tenant"),
    (["tenant_migrate", "UP PER"], "invalid tenant slug 'UP PER'"),
    (["tenant_migrate", "--jobs", "0"], "--jobs must be 1 or more"),
]


@pytest.mark.parametrize("args, expected", ERROR_CASES, ids=[" ".join(a) for a, _ in ERROR_CASES])
def test_errors_are_one_clear_line(args, expected):
    with pytest.raises(CommandError) as caught:
        run(*args)
    message = str(caught.value)
    assert expected in message
    assert "\n" not in message
    assert not Tenant.objects.exists(), "nothing was registered"


def manage_py(tmp_path, *args: str, **env: str) -> subprocess.CompletedProcess:
    """``python -m django <args>`` in a new process with the test settings (and ``env`` added)."""
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings", "TENANT_SCHEMA_TEST_DIR": str(tmp_path), **env}
    return subprocess.run(
        [sys.executable, "-m", "django", *args], cwd=ROOT, env=env, capture_output=True, text=True, check=False
    )


def test_command_line_error_has_no_traceback(tmp_path):
    result = manage_py(tmp_path, "tenant_register", "Bad Slug")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("CommandError: invalid tenant slug 'Bad Slug'")


def test_registering_before_migrate_says_to_run_migrate(tmp_path):
    """A new site's first ``tenant_register``, with the registry's table not created yet."""
    registry = f"sqlite:///{tmp_path}/never-migrated.sqlite3"
    result = manage_py(tmp_path, "tenant_register", "acme", TENANT_SCHEMA_REGISTRY_URL=registry)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        "CommandError: the tenant registry is not set up: table 'tenant_schema_tenant' does not exist in "
        "database 'default'; run `manage.py migrate` once before registering tenants"
    )
    assert not list(tmp_path.glob("*acme*")), "no tenant database was created"


def test_dialects_lists_each_plugin_with_its_distribution():
    out, _ = run("tenant_dialects")
    rows = {line.split()[0]: line for line in out.splitlines()[1:]}
    assert {"sqlite", "postgres", "mysql", "cockroach"} <= set(rows)
    assert "postgres, postgresql" in rows["postgres"]
    for name in ("sqlite", "postgres", "mysql", "cockroach"):
        assert "tenant-schema" in rows[name]
