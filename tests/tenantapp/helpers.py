"""Helpers shared by the registry, life-cycle and isolation tests."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from django.conf import settings
from django.core.management import call_command
from django.db import connections
from django.test.utils import CaptureQueriesContext

ROOT = Path(__file__).resolve().parent.parent.parent

#: The start of every child script: Django set up on this test run's registry and servers
#: (``child_config``, passed as the first argument).
CHILD_SETUP = r"""
import json, os, sys, time
cfg = json.loads(sys.argv[1])
os.environ["DJANGO_SETTINGS_MODULE"] = "tests.settings"
import django
from django.conf import settings
settings.DATABASES["default"]["NAME"] = cfg["registry"]
settings.TENANT_SCHEMA = cfg["tenant_schema"]
django.setup()
"""

CHILD = (
    CHILD_SETUP
    + r"""
from tenant_schema.lifecycle import pool, provision, register
crash = cfg.get("crash")
if crash == "record":  # die while recording migrations: tables made, nothing recorded
    from django.db.migrations.recorder import MigrationRecorder
    MigrationRecorder.migration_qs = property(lambda self: os._exit(3))
elif crash:  # die right after (or before) one step: a function of tenant_schema.<module>, where it is looked up
    import importlib
    target = importlib.import_module("tenant_schema." + cfg.get("module", "lifecycle.provision"))
    original = getattr(target, crash)
    def step(*args, **kwargs):
        if cfg.get("after"):
            original(*args, **kwargs)
        os._exit(3)
    setattr(target, crash, step)
if cfg.get("slow"):  # widen the race window between two registrants
    original_provision = provision.provision
    def slow(tenant):
        time.sleep(cfg["slow"])
        original_provision(tenant)
    provision.provision = slow
if cfg.get("call") == "fill_pool":
    print(pool.fill_pool(cfg["server"]))
else:
    tenant = register.register_tenant(cfg["slug"], server=cfg["server"])
    print(tenant.status)
"""
)


def child_config(slug: str, server: str, **extra) -> dict:
    return {
        "registry": connections["default"].settings_dict["NAME"],
        "tenant_schema": settings.TENANT_SCHEMA,
        "slug": slug,
        "server": server,
        **extra,
    }


def child_command(script: str, slug: str, server: str, **extra) -> list[str]:
    """``python -c script`` with ``child_config(slug, server, **extra)`` as its first argument."""
    return [sys.executable, "-c", script, json.dumps(child_config(slug, server, **extra))]


CHILD_ENV = {"PYTHONPATH": str(ROOT), "TENANT_SCHEMA_DISABLE_PLUGIN_AUTOLOAD": "1"}


def start_child(slug: str, server: str, **extra) -> subprocess.Popen:
    """``register_tenant`` in another process, with this test run's registry and servers."""
    return subprocess.Popen(
        child_command(CHILD, slug, server, **extra),
        cwd=ROOT,
        env={**os.environ, **CHILD_ENV},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def run_child(script: str, slug: str, server: str, **extra) -> list[str]:
    """Run a child script (``CHILD_SETUP`` + your code) to the end; the words it printed."""
    done = subprocess.run(
        child_command(script, slug, server, **extra),
        cwd=ROOT,
        env={**os.environ, **CHILD_ENV},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


def unapplied(tenant) -> bool:
    """What ``manage.py migrate --database <alias> --check`` says: True if anything is left."""
    tenant.database.ensure_alias()
    try:
        call_command("migrate", database=tenant.database.alias, check_unapplied=True, verbosity=0)
    except SystemExit as exc:
        return exc.code != 0
    return False


def tables(tenant) -> set[str]:
    from tenant_schema.schema.ddl import list_tables

    return set(list_tables(tenant.database))


class no_sql(CaptureQueriesContext):
    """Assert (as a context manager) that no query reaches the tenant's database."""

    def __init__(self, tenant_db):
        super().__init__(tenant_db.connection)

    def __exit__(self, *exc):
        super().__exit__(*exc)
        assert self.captured_queries == [], self.captured_queries


def run_pytest(project, settings_module: str) -> subprocess.CompletedProcess:
    """pytest in a fresh process on a site's test project directory, as its author would run it."""
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": settings_module, "PYTHONPATH": str(project)}
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir", str(project), str(project)],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def run_command(*args, **options) -> tuple[str, str]:
    """Run a management command in this process; its (stdout, stderr)."""
    import io

    out, err = io.StringIO(), io.StringIO()
    call_command(*args, stdout=out, stderr=err, **options)
    return out.getvalue(), err.getvalue()
