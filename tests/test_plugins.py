"""The plugin contract: hook specs, lazy loading, autoload switch, a real third-party plugin."""

from __future__ import annotations

import inspect
import ipaddress  # module level: a test dataclass's annotation names it
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
from tests.tenantapp.helpers import run_pytest

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
    unknown = sorted(sections - set(HOOK_NAMES))
    assert not unknown, f"docs/plugins.md documents unknown hooks: {unknown}"


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

    try:
        with pytest.raises(ImproperlyConfigured, match="already registered"):
            plugins.register_plugin(ImpostorPlugin(), name="impostor")
        assert plugins.get_plugins().dialect("postgres").engine == "django.db.backends.postgresql"
        assert plugins.get_plugin_manager().get_plugin("impostor") is None  # left unregistered
    finally:
        plugins.reset_plugins()


@pytest.fixture(scope="module")
def litefile_dist(tmp_path_factory):
    """Build and install tests/plugin_dist the way a user would install a plugin."""
    target = tmp_path_factory.mktemp("site")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--target",
            str(target),
            str(ROOT / "tests" / "plugin_dist"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
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


def test_hook_sql_with_a_literal_percent_runs_as_written(make_tenant_db, server_key):
    """Statements from after_create/before_drop hooks are run without parameter interpolation."""
    from dataclasses import dataclass

    from tenant_schema import drop_table, register_table

    class PercentPlugin:
        @hookimpl
        def tenant_schema_after_create_table(self, dialect, schema_editor, model, table_name):
            quoted = schema_editor.quote_name(table_name + "_notes")
            return [f"CREATE TABLE {quoted} (note VARCHAR(20) DEFAULT '100% sure')"]

        @hookimpl
        def tenant_schema_before_drop_table(self, dialect, schema_editor, model, table_name):
            return [f"DROP TABLE {schema_editor.quote_name(table_name + '_notes')}"]

    @dataclass
    class Memo:
        id: int
        text: str

    plugins.get_plugin_manager().register(PercentPlugin(), name="percent-plugin")
    try:
        tdb = make_tenant_db(server_key)
        register_table(tdb, Memo, "memos")
        with tdb.connection.cursor() as cursor:
            cursor.execute(
                f"INSERT INTO {tdb.connection.ops.quote_name('memos_notes')} DEFAULT VALUES"
                if tdb.dialect.name != "mysql"
                else "INSERT INTO memos_notes () VALUES ()"
            )
            cursor.execute("SELECT note FROM memos_notes")
            assert cursor.fetchone()[0] == "100% sure"
        assert drop_table(tdb, "memos")
    finally:
        plugins.get_plugin_manager().unregister(name="percent-plugin")


# -- the contract, documented ------------------------------------------------------


def _signature_text(function) -> tuple[str, str]:
    """``name(a, b, *, c=None)`` and the return annotation of a method, as docs/plugins.md writes them."""
    parts, star = [], False
    for param in list(inspect.signature(function).parameters.values())[1:]:  # no self
        if param.kind is param.KEYWORD_ONLY and not star:
            parts.append("*")
            star = True
        default = "" if param.default is param.empty else f"={param.default!r}"
        parts.append(f"{param.name}{default}")
    return f"{function.__name__}({', '.join(parts)})", str(inspect.signature(function).return_annotation)


def test_every_public_dialect_method_is_documented_with_its_signature_and_return_value():
    text = (ROOT / "docs" / "plugins.md").read_text()
    problems = []
    for name, method in inspect.getmembers(Dialect, inspect.isfunction):
        if name.startswith("_"):
            continue
        signature, returns = _signature_text(method)
        row = next((line for line in text.splitlines() if line.startswith(f"| `{signature}` |")), None)
        if row is None:
            problems.append(f"no row for `{signature}`")
        elif f"`{returns}`".replace("|", "\\|") not in row:
            problems.append(f"the row of {name} does not say it returns `{returns}`")
    from tenant_schema_sqlite import SQLiteDialect

    signature, returns = _signature_text(SQLiteDialect.file)
    if f"`SQLiteDialect.{signature}`" not in text or returns != "Path":
        problems.append(f"SQLiteDialect.{signature} -> {returns} is not documented")
    assert problems == []


def test_the_plugin_contract_names_no_private_django_method():
    """Plugin authors are never sent to the schema editor's (or connection's) private API."""
    from django.db.backends.base.base import BaseDatabaseWrapper
    from django.db.backends.base.schema import BaseDatabaseSchemaEditor

    private = {
        name
        for cls in (BaseDatabaseSchemaEditor, BaseDatabaseWrapper)
        for name in dir(cls)
        if name.startswith("_") and not name.startswith("__")
    }
    texts = {"docs/plugins.md": (ROOT / "docs" / "plugins.md").read_text()}
    texts.update({f"hookspecs.{n}": inspect.getdoc(getattr(hookspecs, n)) for n in HOOK_NAMES})
    texts.update({f"Dialect.{n}": inspect.getdoc(m) or "" for n, m in inspect.getmembers(Dialect, inspect.isfunction)})
    found = sorted(
        {
            (where, name)
            for where, text in texts.items()
            for name in private
            if re.search(rf"(?<![\w.]){re.escape(name)}\b|\.{re.escape(name)}\b", text)
        }
    )
    assert found == []
    assert "_create_index_sql" in private  # the check above looks for the right names


def test_index_statement_builds_a_quoted_index_a_hook_can_template(make_tenant_db, server_key):
    """A hook built on ``Dialect.index_statement`` creates a working index on every dialect (MySQL: TEXT prefix)."""
    from dataclasses import dataclass

    from tenant_schema import create_index, list_indexes, register_table

    templates = []

    class PlainTemplate:
        @hookimpl
        def tenant_schema_index_sql(self, dialect, schema_editor, model, index):
            template = "CREATE INDEX %(name)s ON %(table)s (%(columns)s)%(extra)s"
            templates.append(index.options)
            return dialect.index_statement(schema_editor, model, index, template=template)

    @dataclass
    class Note:
        id: int
        order: str  # a reserved word, a TEXT column

    tdb = make_tenant_db(server_key)
    register_table(tdb, Note, "notes")
    plugins.get_plugin_manager().register(PlainTemplate())
    name = create_index(tdb, "notes", ["order"], custom=True)
    assert templates == [{"custom": True}]
    assert [(i.name, i.columns) for i in list_indexes(tdb, "notes")] == [(name, ("order",))]


# -- loading -------------------------------------------------------------------------


def _with_plugins(*dotted: str, autoload: bool | None = None):
    from django.conf import settings

    config = {**settings.TENANT_SCHEMA, "PLUGINS": list(dotted)}
    if autoload is not None:
        config["PLUGINS_AUTOLOAD"] = autoload
    return override_settings(TENANT_SCHEMA=config)


def _impls_of(module) -> list:
    return [
        i
        for i in plugins.get_plugin_manager().hook.tenant_schema_register_dialects.get_hookimpls()
        if i.plugin is module
    ]


def test_a_builtin_dialect_listed_in_plugins_is_registered_once():
    import tenant_schema_sqlite

    with _with_plugins("tenant_schema_sqlite"):
        state = plugins.get_plugins()
        assert state.dialect_plugins["sqlite"] == "sqlite"
        assert len(_impls_of(tenant_schema_sqlite)) == 1


def test_an_autoloaded_plugin_listed_in_plugins_too_is_registered_once(litefile_dist, monkeypatch):
    monkeypatch.delenv("TENANT_SCHEMA_DISABLE_PLUGIN_AUTOLOAD", raising=False)
    with _with_plugins("tenant_schema_litefile", autoload=True):
        state = plugins.get_plugins()
        assert state.dialect_plugins["litefile"] == "litefile"  # its entry point's name
        assert state.distributions["litefile"] == ("tenant-schema-litefile", "1.0.0")
        import tenant_schema_litefile

        assert len(_impls_of(tenant_schema_litefile)) == 1
    plugins.reset_plugins()
    with _with_plugins("tenant_schema_litefile", autoload=False):  # listed: loaded with autoload off too
        assert plugins.get_plugins().dialect_plugins["litefile"] == "tenant_schema_litefile"


def test_a_listed_plugin_that_does_not_import_names_itself():
    with _with_plugins("no_such_plugin_module"):
        with pytest.raises(
            ImproperlyConfigured,
            match=r"""TENANT_SCHEMA\["PLUGINS"\] lists 'no_such_plugin_module', """
            r"which does not import: No module named",
        ):
            plugins.get_plugins()


def test_the_unknown_scheme_hint_says_whether_plugins_are_autoloaded(monkeypatch):
    from django.conf import settings

    from tenant_schema import checks

    monkeypatch.delenv("TENANT_SCHEMA_DISABLE_PLUGIN_AUTOLOAD", raising=False)
    for autoload, says, never in (
        (True, "are autoloaded", "not autoloaded"),
        (False, "not autoloaded", "are autoloaded"),
    ):
        config = {**settings.TENANT_SCHEMA, "SERVERS": {"default": "oracle://db/"}, "PLUGINS_AUTOLOAD": autoload}
        with override_settings(TENANT_SCHEMA=config):
            (error,) = [e for e in checks.check_servers() if e.id == "tenant_schema.E002"]
        assert says in error.hint and never not in error.hint
        assert 'TENANT_SCHEMA["PLUGINS"]' in error.hint


# -- registering plugins in tests ----------------------------------------------------


class _EchoDialect(Dialect):
    name = "echo"
    engine = "django.db.backends.sqlite3"
    schemes = ("echo",)


class _EchoPlugin:
    @hookimpl
    def tenant_schema_register_dialects(self, register):
        register(_EchoDialect)


def test_register_plugin_adds_the_dialects_a_late_plugin_declares():
    pm = plugins.get_plugin_manager()
    pm.register(late := _EchoPlugin())
    assert "echo" not in plugins.get_plugins().dialects  # register_dialects ran when the manager was built
    pm.unregister(late)

    assert plugins.register_plugin(_EchoPlugin(), name="echo-plugin") == "echo-plugin"
    state = plugins.get_plugins()
    assert state.dialect_for_scheme("echo").name == "echo"
    assert state.dialect_plugins["echo"] == "echo-plugin"
    plugins.reset_plugins()
    assert "echo" not in plugins.get_plugins().dialects


def test_register_plugin_refuses_a_taken_dialect_name_and_leaves_nothing_behind():
    class Impostor(Dialect):
        name = "sqlite"
        engine = "x"
        schemes = ("impostor",)

    class ImpostorPlugin:
        @hookimpl
        def tenant_schema_register_dialects(self, register):
            register(_EchoDialect)
            register(Impostor)

    plugin = ImpostorPlugin()
    with pytest.raises(ImproperlyConfigured, match="'sqlite' from 'impostor' is already registered by 'sqlite'"):
        plugins.register_plugin(plugin, name="impostor")
    state = plugins.get_plugins()
    assert not state.manager.is_registered(plugin)
    assert "echo" not in state.dialects and "echo" not in state.schemes


def test_the_tenant_schema_plugin_fixture_registers_for_one_test_only(tmp_path):
    """Run as a plugin author's suite would: the fixture comes from tenant-schema's pytest plugin."""
    (tmp_path / "author_settings.py").write_text(
        'SECRET_KEY = "x"\nINSTALLED_APPS = ["tenant_schema"]\nTENANT_SCHEMA = {"PLUGINS_AUTOLOAD": False}\n'
    )
    (tmp_path / "test_author.py").write_text(
        "from tenant_schema import hookimpl\n"
        "from tenant_schema.plugins import get_plugins\n"
        "from tenant_schema_sqlite import SQLiteDialect\n\n"
        "class Echo(SQLiteDialect):\n    name = 'echo'\n    schemes = ('echo',)\n\n"
        "class EchoPlugin:\n    @hookimpl\n    def tenant_schema_register_dialects(self, register):\n"
        "        register(Echo)\n\n"
        "def test_registered(tenant_schema_plugin):\n"
        "    assert tenant_schema_plugin(EchoPlugin(), name='echo-plugin') == 'echo-plugin'\n"
        "    assert get_plugins().dialect_for_scheme('echo').name == 'echo'\n\n"
        "def test_gone_in_the_next_test():\n"
        "    assert 'echo' not in get_plugins().dialects\n"
        "    assert get_plugins().manager.get_plugin('echo-plugin') is None\n"
    )
    result = run_pytest(tmp_path, "author_settings")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 passed" in result.stdout


# -- field mapping -------------------------------------------------------------------


def test_a_plugin_field_receives_the_annotated_value_and_rows_get_what_it_returns(make_tenant_db, server_key):
    """The field_for_annotation contract of docs/plugins.md: IPv4Address in, IPv4Address out, on every dialect."""
    from dataclasses import dataclass

    from django.db import models

    from tenant_schema import register_table

    received = []

    class IPv4AddressField(models.GenericIPAddressField):
        def __init__(self, *args, **kwargs):
            kwargs.setdefault("protocol", "IPv4")
            super().__init__(*args, **kwargs)

        def get_prep_value(self, value):
            received.append(value)
            return super().get_prep_value(None if value is None else str(value))

        def from_db_value(self, value, expression, connection):
            return None if value is None else ipaddress.IPv4Address(value)

    class IPv4Plugin:
        @hookimpl
        def tenant_schema_field_for_annotation(self, dialect, annotation, name, metadata):
            return IPv4AddressField() if annotation is ipaddress.IPv4Address else None

    @dataclass
    class Host:
        id: int
        address: ipaddress.IPv4Address
        fallback: ipaddress.IPv4Address | None = None

    one, two = ipaddress.IPv4Address("10.0.0.1"), ipaddress.IPv4Address("10.0.0.2")
    plugins.get_plugin_manager().register(IPv4Plugin())
    tdb = make_tenant_db(server_key)
    hosts = register_table(tdb, Host, "hosts")
    created = hosts.create(Host(id=None, address=one))
    assert one in received  # unconverted: the field gets the annotated type
    hosts.batch_create([Host(id=None, address=two, fallback=one)])
    hosts.update(created.id, {"fallback": two})
    assert hosts.read(created.id) == Host(id=created.id, address=one, fallback=two)
    assert [h.address for h in hosts.list(where={"fallback": one})] == [two]
    assert all(isinstance(h.address, ipaddress.IPv4Address) for h in hosts.list())
