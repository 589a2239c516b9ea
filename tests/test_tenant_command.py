"""``tenant_command``: any management command, run inside one tenant or in each of many.

What an operator relies on: the command sees the tenant (its ORM queries
and its ``--database`` reach the tenant's database), a failure is one
readable line, and a fleet run keeps going past a failing tenant, says
which tenant wrote each line, never touches tenants that are not ready,
and exits non-zero when any failed, whether the tenants run one after the
other or in threads. ``tests/tenantapp/management/commands/tenant_probe.py``
is the command run inside the tenants.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.conf import settings
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db.migrations.recorder import MigrationRecorder

from tenant_schema import tenant_context
from tenant_schema.lifecycle.archive import archive_tenant, purge_tenant
from tenant_schema.lifecycle.pool import pool_slug
from tenant_schema.lifecycle.register import register_tenant
from tenant_schema.models import Tenant
from tests.tenantapp.helpers import run_command
from tests.tenantapp.models import Note

from .conftest import new_tenant_id, require_server

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.django_db(transaction=True)
run = run_command


@pytest.fixture
def tenants(db_access):
    """``tenants(count=1, server="default")``: ready tenants with the tenant apps' tables, purged afterwards."""
    made: list[Tenant] = []

    def make(count: int = 1, server: str = "default") -> list[Tenant]:
        require_server(server)
        new = [register_tenant(new_tenant_id(), server=server) for _ in range(count)]
        made.extend(new)
        return new

    yield make
    for tenant in Tenant.objects.filter(pk__in=[t.pk for t in made]):
        tenant.database.close()
        purge_tenant(tenant)


def add_notes(tenant: Tenant, count: int) -> None:
    with tenant_context(tenant):
        Note.objects.bulk_create([Note(title=f"note {i}") for i in range(count)])


# -- one tenant ---------------------------------------------------------------------


def test_the_command_runs_inside_the_tenant(tenants, server_key):
    (acme,) = tenants(server=server_key)
    (other,) = tenants()
    add_notes(acme, 2)
    add_notes(other, 5)

    out, err = run("tenant_command", "tenant_probe", "--tenant", acme.slug)
    assert out == f"tenant={acme.slug} database=tenant:{acme.slug} notes=2 all=False\n"
    assert err == f"stderr of {acme.slug}\n"

    # tenant_command's options before the command name; a --database given by hand is kept.
    out, _ = run("tenant_command", "--tenant", acme.slug, "tenant_probe", "--database", "default")
    assert out == f"tenant={acme.slug} database=default notes=2 all=False\n"


def test_dumpdata_and_shell_see_the_tenants_rows(tenants, capsys):
    (acme,) = tenants()
    add_notes(acme, 3)

    out, _ = run("tenant_command", "dumpdata", "tenantapp.note", "--tenant", acme.slug)
    assert sorted(row["fields"]["title"] for row in json.loads(out)) == ["note 0", "note 1", "note 2"]

    code = "from tests.tenantapp.models import Note; print(Note.objects.count())"
    run("tenant_command", "shell", "-v", "0", "-c", code, "--tenant", acme.slug)
    assert capsys.readouterr().out == "3\n"


def test_migrate_reaches_the_tenants_database(tenants):
    (acme,) = tenants()
    alias = acme.database.alias
    call_command("migrate", "tenantapp", "0001_initial", database=alias, verbosity=0)  # one migration behind
    acme.database.close()

    with pytest.raises(CommandError, match=rf"^migrate failed in tenant '{acme.slug}': exited with status 1$"):
        run("tenant_command", "migrate", "--check", "--tenant", acme.slug)  # Django's migrate exits 1
    run("tenant_command", "migrate", "-v", "0", "--tenant", acme.slug)
    recorder = MigrationRecorder(acme.database.connection)
    assert ("tenantapp", "0002_note_pinned") in recorder.applied_migrations()
    acme.database.close()
    run("tenant_command", "migrate", "--check", "--tenant", acme.slug)


ERRORS = [
    (["tenant_probe", "--tenant", "nobody-here"], r"^no tenant 'nobody-here' is registered$"),
    (["tenant_probe", "--tenant", "Bad Slug"], r"^no tenant 'Bad Slug': invalid tenant slug 'Bad Slug'"),
    (["no_such_command", "--tenant", "x"], r"^unknown command 'no_such_command'"),
    (["tenant_probe"], r"^name the tenants to run tenant_probe in: --tenant SLUG \(repeatable\) or --all$"),
    (["tenant_probe", "--all"], r"tenant_probe has its own --all: put tenant_command's before the command name"),
    (["--all", "tenant_probe", "--tenant", "x"], r"^give --tenant SLUG or --all, not both$"),
    (["tenant_probe", "--nope", "--tenant", "x"], r"^tenant_probe: Error: unrecognized arguments: --nope$"),
    (["tenant_probe", "--tenant", "x", "--jobs", "0"], r"^--jobs must be 1 or more, not 0$"),
    (["tenant_command", "--all"], r"^tenant_command cannot run tenant_command$"),
]


@pytest.mark.parametrize("args, expected", ERRORS, ids=[" ".join(a) for a, _ in ERRORS])
def test_errors_are_one_line(db_access, args, expected):
    with pytest.raises(CommandError, match=expected) as caught:
        run("tenant_command", *args)
    assert "\n" not in str(caught.value)


def test_a_failure_in_the_tenant_is_one_line(tenants):
    (acme,) = tenants()
    with pytest.raises(CommandError) as caught:
        run("tenant_command", "tenant_probe", "--fail-in", acme.slug, "--tenant", acme.slug)
    assert str(caught.value) == f"tenant_probe failed in tenant '{acme.slug}': told to fail in {acme.slug}"

    out, err = io.StringIO(), io.StringIO()
    with pytest.raises(CommandError) as caught:
        call_command(
            "tenant_command", "tenant_probe", "--crash-in", acme.slug, tenant=acme.slug, stdout=out, stderr=err
        )
    assert str(caught.value) == f"tenant_probe failed in tenant '{acme.slug}': ZeroDivisionError: a bug in {acme.slug}"
    assert "Traceback" not in err.getvalue()

    with pytest.raises(CommandError):  # -v 2: the traceback too
        call_command(
            "tenant_command", "tenant_probe", "--crash-in", acme.slug, tenant=acme.slug, verbosity=2, stderr=err
        )
    assert "Traceback (most recent call last)" in err.getvalue()


def test_only_ready_tenants_are_selected(tenants):
    (archived,) = tenants()
    archive_tenant(archived)
    with pytest.raises(CommandError, match=rf"^tenant '{archived.slug}' is archived, not ready: tenant_command runs"):
        run("tenant_command", "tenant_probe", "--tenant", archived.slug)


# -- many tenants -------------------------------------------------------------------


@pytest.mark.parametrize("jobs", [1, 2])
def test_a_fleet_run_keeps_going_prefixes_each_line_and_fails_at_the_end(tenants, jobs):
    first, broken, last = sorted(tenants(3), key=lambda t: t.slug)
    add_notes(last, 4)
    stdout = sys.stdout
    slugs = [arg for t in (first, broken, last) for arg in ("--tenant", t.slug)]

    out, err = io.StringIO(), io.StringIO()
    with pytest.raises(CommandError) as caught:
        call_command(
            "tenant_command", "tenant_probe", "--print", "--fail-in", broken.slug, *slugs, "--jobs", str(jobs),
            stdout=out, stderr=err,
        )  # fmt: skip
    assert str(caught.value) == f"tenant_probe failed in 1 of 3 tenants: {broken.slug}"
    assert sys.stdout is stdout, "print() goes back to the real stdout"

    lines = out.getvalue().splitlines()
    assert lines[-1] == f"2 succeeded, 1 failed: {broken.slug}."
    expected = {
        f"[{first.slug}] tenant={first.slug} database=tenant:{first.slug} notes=0 all=False",
        f"[{first.slug}] printed in {first.slug}",  # print() in the command is caught, in threads too
        f"[{last.slug}] tenant={last.slug} database=tenant:{last.slug} notes=4 all=False",
        f"[{last.slug}] printed in {last.slug}",
    }
    assert set(lines[:-1]) == expected
    for tenant in (first, last):  # each tenant's lines in the order it wrote them
        mine = [line for line in lines if line.startswith(f"[{tenant.slug}] ")]
        assert mine[1] == f"[{tenant.slug}] printed in {tenant.slug}"
    assert set(err.getvalue().splitlines()) == {
        f"[{first.slug}] stderr of {first.slug}",
        f"[{broken.slug}] failed: told to fail in {broken.slug}",
        f"[{last.slug}] stderr of {last.slug}",
    }


def test_all_runs_in_every_ready_tenant_and_nothing_else(tenants):
    ready = sorted(tenants(2), key=lambda t: t.slug)
    (archived,) = tenants()
    archive_tenant(archived)
    # Rows with no database: running anything in them would fail the run.
    Tenant.objects.create(slug=pool_slug(), server="default", status=Tenant.Status.POOLED, database_name="tstest_x")
    Tenant.objects.create(slug=new_tenant_id(), server="default", status=Tenant.Status.FAILED, database_name="tstest_y")

    for jobs in ("1", "2"):
        out, _ = run("tenant_command", "--all", "--jobs", jobs, "tenant_probe")
        ran = sorted(line.split("]")[0][1:] for line in out.splitlines()[:-1])
        assert ran == [t.slug for t in ready]
        assert out.splitlines()[-1] == "2 succeeded, 0 failed."

    # The command's own --all is the command's: tenant_command's comes before the command name.
    out, _ = run("tenant_command", "tenant_probe", "--all", "--tenant", ready[0].slug)
    assert out.endswith("all=True\n")


def test_a_fleet_run_shows_a_progress_bar(tenants, capsys):
    slugs = [arg for t in tenants(2) for arg in ("--tenant", t.slug)]
    run("tenant_command", "tenant_probe", *slugs, "--progress")
    assert "2/2" in capsys.readouterr().err


def test_from_the_command_line(tenants, tmp_path):
    """Through ``manage.py``: the options after the command's, exit status 1 and no traceback on a failure."""
    registry = settings.DATABASES["default"]
    if "sqlite" not in registry["ENGINE"]:
        pytest.skip("the child process reaches the test registry through a SQLite file")
    first, broken = sorted(tenants(2), key=lambda t: t.slug)
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "TENANT_SCHEMA_REGISTRY_URL": f"sqlite:///{registry['NAME']}",
    }
    command = [sys.executable, "-m", "django", "tenant_command", "tenant_probe", "--fail-in", broken.slug]
    result = subprocess.run(
        [*command, "--tenant", first.slug, "--tenant", broken.slug, "-j", "2"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert result.returncode == 1, result.stderr
    assert f"[{first.slug}] tenant={first.slug} database=tenant:{first.slug} notes=0 all=False" in result.stdout
    assert "Traceback" not in result.stderr
    assert result.stderr.splitlines()[-1] == f"CommandError: tenant_probe failed in 1 of 2 tenants: {broken.slug}"
