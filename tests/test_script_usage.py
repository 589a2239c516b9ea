"""The README's first example and the seed's own example run in a plain script, as written."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from .test_docs import ROOT, blocks

SEED = """
import tenant_schema

tenant_schema.configure()

from tenant_schema import get_or_create_tenant_db, register_table


class Transaction:
    id: str
    amount: float
    date: str
    category: str = None

tenant_db = get_or_create_tenant_db("tenant_123")
transactions = register_table(tenant_db, Transaction, "transactions")
transactions.insert(Transaction(id="t1", amount=100.0, date="2024-01-01"))
print(tenant_db.slug, transactions.read("t1").category)
"""


def run_script(code: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    env["TENANT_SCHEMA_DISABLE_PLUGIN_AUTOLOAD"] = "1"
    (cwd / "script.py").write_text(code)
    return subprocess.run([sys.executable, "script.py"], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def test_the_readme_example_runs_in_a_plain_script(tmp_path):
    code = next(code for kind, _, code in blocks(ROOT / "README.md") if kind == "python")
    done = run_script(code, tmp_path)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "var" / "registry.sqlite3").exists()
    assert (tmp_path / "var" / "tenants" / "tenant_acme_readme.sqlite3").exists()
    # Another process finds the tenant through the registry, with its data.
    later = run_script(
        "import tenant_schema\ntenant_schema.configure()\n"
        "from tenant_schema import get_tenant_db\n"
        "print(get_tenant_db('acme-readme').table('transactions').count())\n",
        tmp_path,
    )
    assert later.returncode == 0, later.stderr
    assert later.stdout.strip() == "2"


def test_the_seed_example_runs_as_written(tmp_path):
    done = run_script(SEED, tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["tenant-123", "None"]
