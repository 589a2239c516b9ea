"""The package is a one-way stack: no module imports one of a layer above it, not even inside a function.

``docs/architecture.md`` describes the layers; this test holds the code to
them. Imports under ``if TYPE_CHECKING:`` are annotations only and are not
counted.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "tenant_schema"

#: Bottom to top. A module may import modules of its own layer or below.
LAYERS: list[tuple[str, set[str]]] = [
    ("utilities", {"conf", "names", "exceptions", "signals", "lazy", "django_private"}),
    ("plugin contract", {"hookspecs", "dialects", "plugins"}),
    ("connections", {"aliases", "servers", "credentials", "databases"}),
    ("registry", {"models", "registry", "ownership", "migration_plan", "placement"}),
    ("schema and rows", {"schema"}),
    ("life cycle", {"lifecycle"}),
    (
        "run-time selection",
        {"context", "routers", "middleware", "object_isolation", "cache", "storage", "celery", "channels", "logging"},
    ),
    ("interfaces", {"admin", "apps", "checks", "testing", "standalone", "management", "migrations", "__init__"}),
]
LEVEL = {module: level for level, (_, modules) in enumerate(LAYERS) for module in modules}

#: ``tenant_schema/lifecycle/``'s modules in the order its ``__init__`` gives: each imports only earlier ones.
LIFECYCLE = [
    "build",
    "migrate",
    "clone",
    "provision",
    "archive",
    "pool",
    "register",
    "fleet_worker",
    "fleet",
    "seed",
    "move",
    "rebalance",
    "exchange",
]


def top_module(dotted: str) -> str:
    """``tenant_schema.management.commands.x`` -> ``management``; ``tenant_schema`` -> ``__init__``."""
    parts = dotted.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def imports_of(path: Path) -> set[str]:
    module = "tenant_schema." + ".".join(path.relative_to(PACKAGE).with_suffix("").parts)
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    package = package.removesuffix(".__init__")
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            node.body = []
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
                names = [f"{target}.{a.name}" for a in node.names] if not node.module else [target]
            else:
                names = [node.module or ""]
            found.update(n for n in names if n.startswith("tenant_schema"))
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("tenant_schema"))
    return found


def test_every_module_has_a_layer():
    modules = {
        top_module("tenant_schema." + ".".join(p.relative_to(PACKAGE).with_suffix("").parts))
        for p in PACKAGE.rglob("*.py")
    }
    assert modules - set(LEVEL) == set()


def test_no_module_imports_a_layer_above_its_own():
    upward = []
    for path in sorted(PACKAGE.rglob("*.py")):
        here = top_module("tenant_schema." + ".".join(path.relative_to(PACKAGE).with_suffix("").parts))
        for target in imports_of(path):
            there = top_module(target)
            if there in LEVEL and LEVEL[there] > LEVEL[here]:
                upward.append(
                    f"{path.relative_to(PACKAGE)} ({LAYERS[LEVEL[here]][0]}) imports "
                    f"{target} ({LAYERS[LEVEL[there]][0]})"
                )
    assert upward == []


def test_the_life_cycle_modules_import_only_the_ones_before_them():
    package = PACKAGE / "lifecycle"
    assert sorted(p.stem for p in package.glob("*.py")) == sorted([*LIFECYCLE, "__init__"])
    assert imports_of(package / "__init__.py") == set()  # a fleet worker imports the package before django.setup()
    backward = []
    for here, name in enumerate(LIFECYCLE):
        for target in sorted(imports_of(package / f"{name}.py")):
            parts = target.split(".")
            if parts[:2] == ["tenant_schema", "lifecycle"] and LIFECYCLE.index(parts[2]) >= here:
                backward.append(f"lifecycle/{name}.py imports {target}")
    assert backward == []


def test_modules_import_before_django_is_set_up():
    """A settings module, an ``apps.py`` or a script may import the API before ``django.setup()``."""
    import subprocess
    import sys

    modules = ["context", "routers", "schema.ddl", "schema.tables", "registry", "migration_plan", "databases"]
    code = "; ".join(f"import tenant_schema.{m}" for m in modules)
    env = {"DJANGO_SETTINGS_MODULE": "tests.settings", "PATH": "/usr/bin:/bin"}
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=PACKAGE.parent, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
