"""The plugin contract: hook specs, lazy loading, autoload switch, a real third-party plugin."""

from __future__ import annotations

import inspect
import re
import subprocess
import sys
from pathlib import Path

import pluggy
import pytest
from django.core.exceptions import ImproperlyConfigured
from django.test import override_settings

from tenant_schema import hookimpl, hookspecs, plugins
from tenant_schema.dialects import Dialect

ROOT = Path(__file__).resolve().parent.parent
HOOK_NAMES = sorted(n for n in dir(hookspecs) if n.startswith("tenant_schema_"))


@pytest.fixture(autouse=True)
def fresh_plugins():
    """Each test builds its own plugin manager and leaves none behind."""
    plugins.reset_plugins()
    yield
    plugins.reset_plugins()


def test_every_hook_is_typed_and_has_a_docstring():
    assert len(HOOK_NAMES) >= 10
    for name in HOOK_NAMES:
        fn = getattr(hookspecs, name)
        assert inspect.getdoc(fn), f"{name} has no docstring"
        sig = inspect.signature(fn)
        assert sig.return_annotation is not inspect.Signature.empty, f"{name} has no return annotation"
        for param in sig.parameters.values():
            assert param.annotation is not inspect.Parameter.empty, f"{name}({param.name}) is not annotated"


def test_every_hook_has_a_section_in_the_plugin_docs():
    text = (ROOT / "docs" / "plugins.md").read_text()
    sections = set(re.findall(r"^### `?(tenant_schema_\w+)", text, re.M))
    missing = set(HOOK_NAMES) - sections
    assert not missing, f"docs/plugins.md lacks a section for: {sorted(missing)}"
    assert not sections - set(HOOK_NAMES), f"docs/plugins.md documents unknown hooks: {sorted(sections - set(HOOK_NAMES))}"


def test_importing_the_package_loads_no_plugin():
    code = (
        "import os; os.environ['DJANGO_SETTINGS_MODULE']='tests.settings'\n"
        "import django; django.setup()\n"
        "import tenant_schema, sys\n"
        "from tenant_schema import plugins\n"
        "assert not plugins._state.built, 'plugin manager built at import'\n"
        "assert 'tenant_schema_postgres' not in sys.modules, 'adapter imported at start-up'\n"
        "plugins.get_plugins()\n"
        "assert 'tenant_schema_postgres' in sys.modules\n"
        "print('lazy-ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "lazy-ok" in out.stdout


def test_builtin_dialects_come_from_this_distributions_entry_points():
    state = plugins.get_plugins()
    assert {"postgres", "cockroach", "mysql", "sqlite"} <= set(state.dialects)
    for name in ("postgres", "cockroach", "mysql", "sqlite"):
        plugin = state.dialect_plugins[name]
        assert state.distributions[plugin][0] == "tenant-schema"
    assert state.dialect_for_scheme("postgresql").name == "postgres"
    assert state.dialect_for_scheme("mariadb").name == "mysql"


def test_unknown_scheme_names_the_known_ones():
    with pytest.raises(ImproperlyConfigured, match=r"no dialect plugin handles URL scheme 'oracle'.*postgres"):
        plugins.get_plugins().dialect_for_scheme("oracle")


def test_two_plugins_cannot_claim_one_dialect_name():
    class Impostor(Dialect):
        name = "postgres"
        engine = "x"
        schemes = ("impostor",)

    class ImpostorPlugin:
        @hookimpl
        def tenant_schema_register_dialects(self, register):
            register(Impostor)

    state = plugins.PluginState(manager=pluggy.PluginManager("tenant_schema"))
    plugins._register_dialect(state, plugins.get_plugins().dialects["postgres"], "postgres")
    with pytest.raises(ImproperlyConfigured, match="already registered"):
        plugins._register_dialect(state, Impostor, "impostor")


@pytest.fixture(scope="module")
def litefile_dist(tmp_path_factory):
    """Build and install tests/plugin_dist the way a user would install a plugin."""
    target = tmp_path_factory.mktemp("site")
    result = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
         "--target", str(target), str(ROOT / "tests" / "plugin_dist")],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert list(target.glob("tenant_schema_litefile-1.0.0.dist-info/entry_points.txt"))
    sys.path.insert(0, str(target))
    import importlib

    importlib.invalidate_caches()
    yield target
    sys.path.remove(str(target))
    sys.modules.pop("tenant_schema_litefile", None)
    importlib.invalidate_caches()


def _settings_with(server_url: str, autoload: bool):
    from django.conf import settings

    config = dict(settings.TENANT_SCHEMA)
    config["SERVERS"] = {**config["SERVERS"], "lf": server_url}
    config["PLUGINS_AUTOLOAD"] = autoload
    return override_settings(TENANT_SCHEMA=config)


def test_third_party_plugin_is_not_loaded_when_autoload_is_off(litefile_dist, monkeypatch):
    monkeypatch.delenv("TENANT_SCHEMA_DISABLE_PLUGIN_AUTOLOAD", raising=False)
    with _settings_with("litefile:///unused/", autoload=False):
        assert "litefile" not in plugins.get_plugins().dialects
    monkeypatch.setenv("TENANT_SCHEMA_DISABLE_PLUGIN_AUTOLOAD", "1")
    plugins.reset_plugins()
    with _settings_with("litefile:///unused/", autoload=True):
        assert "litefile" not in plugins.get_plugins().dialects


def test_installed_third_party_dialect_and_after_create_hook_take_effect(
    litefile_dist, monkeypatch, tmp_path, db_access
):
    from dataclasses import dataclass

    from tenant_schema import drop_table, list_tables, register_table

    from .conftest import make_bare_tenant_db

    monkeypatch.delenv("TENANT_SCHEMA_DISABLE_PLUGIN_AUTOLOAD", raising=False)
    with _settings_with(f"litefile:///{tmp_path}/", autoload=True):
        state = plugins.get_plugins()
        assert state.dialects["litefile"].__module__ == "tenant_schema_litefile"
        assert state.distributions["litefile"] == ("tenant-schema-litefile", "1.0.0")

        @dataclass
        class Memo:
            id: int
            text: str

        tdb = make_bare_tenant_db("lf", "plugin-demo")
        try:
            assert tdb.dialect.name == "litefile"
            assert (tmp_path / "tstest_plugin_demo.lite").exists()
            register_table(tdb, Memo, "memos")
            assert list_tables(tdb) == ["memos", "memos_audit"]
            drop_table(tdb, "memos")
            assert list_tables(tdb) == []
        finally:
            tdb.close()
            from tenant_schema import drop_tenant_db

            drop_tenant_db("plugin-demo", server="lf")
        # The hook is conditioned on its dialect: SQLite tenants get no audit table.
        sqlite_db = make_bare_tenant_db("sqlite", "plugin-demo-sqlite")
        try:
            register_table(sqlite_db, Memo, "memos")
            assert list_tables(sqlite_db) == ["memos"]
        finally:
            sqlite_db.close()
            drop_tenant_db("plugin-demo-sqlite", server="sqlite")


def test_a_plugin_can_override_a_field_mapping_of_an_existing_dialect(make_tenant_db):
    """Extending an existing dialect: store ``Path`` annotations as VARCHAR(500) on every dialect."""
    from dataclasses import dataclass

    from django.db import models

    from tenant_schema import register_table

    class PathPlugin:
        @hookimpl
        def tenant_schema_field_for_annotation(self, dialect, annotation, name, metadata):
            if annotation is Path:
                return models.CharField(max_length=500)
            return None

    @dataclass
    class Upload:
        id: int
        location: Path

    plugins.get_plugin_manager().register(PathPlugin(), name="path-plugin")
    tdb = make_tenant_db("sqlite")
    table = register_table(tdb, Upload, "uploads")
    field = table.model._meta.get_field("location")
    assert isinstance(field, models.CharField) and field.max_length == 500


def test_hook_implementations_with_unknown_arguments_are_rejected():
    class Wrong:
        @hookimpl
        def tenant_schema_after_create_table(self, dialect, nonsense):
            return None

    with pytest.raises(pluggy.PluginValidationError):
        plugins.get_plugin_manager().register(Wrong())


def test_disable_autoload_env_var_is_honoured(monkeypatch):
    from tenant_schema import conf

    monkeypatch.setenv(conf.AUTOLOAD_ENV, "1")
    assert conf.plugins_autoload() is False
    monkeypatch.setenv(conf.AUTOLOAD_ENV, "0")
    with override_settings(TENANT_SCHEMA={"PLUGINS_AUTOLOAD": True}):
        assert conf.plugins_autoload() is True
