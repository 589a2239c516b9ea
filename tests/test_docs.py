"""Every code example in README.md and docs/ runs.

```python blocks of one file run in order in one module namespace (a later
block may use what an earlier one defined). Lines of ```console blocks that
start with ``$ python manage.py`` run through ``call_command``; other shell
lines (``./run test``) are what CI itself runs. Tenant databases an example
registers are purged afterwards.
"""

from __future__ import annotations

import re
import shlex
import sys
import types
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOC_FILES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCK_RE = re.compile(r"^```(python|console)[^\n]*\n(.*?)^```", re.S | re.M)


def blocks(path: Path) -> list[tuple[str, int, str]]:
    text = path.read_text()
    return [(m.group(1), text[: m.start()].count("\n") + 2, m.group(2)) for m in BLOCK_RE.finditer(text)]


RUNNABLE = [p for p in DOC_FILES if p.exists() and blocks(p)]


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("path", RUNNABLE, ids=[str(p.relative_to(ROOT)) for p in RUNNABLE])
def test_doc_examples_run(path, django_db_blocker, tmp_path, monkeypatch):
    from django.core.management import call_command

    from tenant_schema import plugins
    from tenant_schema.models import Tenant
    from tenant_schema.provisioning import purge_tenant

    monkeypatch.chdir(tmp_path)
    before = set(Tenant.objects.values_list("pk", flat=True))
    module = types.ModuleType(f"doc_example_{path.stem.replace('-', '_')}")
    sys.modules[module.__name__] = module
    ran = 0
    try:
        for kind, line, code in blocks(path):
            if kind == "python":
                exec(compile(code, f"{path.name}:{line}", "exec"), module.__dict__)
                ran += 1
                continue
            for command in code.splitlines():
                if command.startswith("$ python manage.py "):
                    args = shlex.split(command[len("$ python manage.py "):])
                    call_command(*args)
                    ran += 1
    finally:
        sys.modules.pop(module.__name__, None)
        plugins.reset_plugins()  # examples register throwaway plugins
        for tenant in Tenant.objects.exclude(pk__in=before):
            tenant.database.close()
            purge_tenant(tenant)
    assert ran, f"{path.name} has code blocks but none ran"


def test_every_public_name_is_documented():
    """Everything ``tenant_schema`` exports is named somewhere in README.md or docs/."""
    import tenant_schema

    text = "".join(p.read_text() for p in DOC_FILES if p.exists())
    def named(name: str) -> bool:  # inside a code span or a code block
        return bool(re.search(rf"`[^`\n]*\b{re.escape(name)}\b[^`\n]*`|\b{re.escape(name)}\(", text))

    missing = [name for name in tenant_schema.__all__ if not named(name)]
    assert not missing, f"undocumented public names: {missing}"
