"""Django's private API stays in ``tenant_schema.django_private``; dialect flags Django knows come from Django."""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

import pytest
from django.db import models

from tenant_schema import django_private
from tenant_schema.dialects import KEY_TEXT_LENGTH, PORTABLE_IDENTIFIER_LENGTH, Dialect
from tenant_schema.schema.mapping import plan_dataclass

ROOT = Path(__file__).resolve().parent.parent

#: Django modules (and names) only ``django_private`` may import. Imports for type
#: checking only are counted too; ``dialects`` and ``hookspecs`` name Django's
#: ``ddl_references.Statement`` as the type index hooks return (plugins build one
#: with the public ``Dialect.index_statement()``), the one exception below.
FENCED_MODULES = {
    "django.apps.registry",
    "django.db.migrations.autodetector",
    "django.db.migrations.executor",
    "django.db.migrations.loader",
    "django.db.migrations.questioner",
    "django.db.migrations.recorder",
    "django.db.migrations.state",
    "django.db.models.sql",
    "django.db.models.sql.query",
    "django.db.models.sql.subqueries",
    "django.db.models.fields.related_descriptors",
    "django.db.utils",
    "django.db.backends.postgresql.base",
    "django.db.backends.postgresql.psycopg_any",
    "django.db.models.constants",
    "django.db.models.deletion",
    "django.db.backends.base.operations",
}
FENCED_NAMES = {
    ("django.core.management", "get_commands"),
    ("django.core.management", "load_command_class"),
    ("django.http.request", "split_domain_port"),
    ("django.db.models", "sql"),
    ("django.db.models.fields", "AutoFieldMixin"),
}


#: The one fenced module the public plugin contract names: ``Statement``, the type
#: the index hooks return, imported under ``if TYPE_CHECKING:`` only.
TYPE_ONLY = {"django.db.backends.ddl_references"}


def _sources() -> list[Path]:
    paths = [*(ROOT / "tenant_schema").rglob("*.py"), *(ROOT / "adapters").rglob("*.py")]
    return sorted(p for p in paths if p.name != "django_private.py")


def _type_checking_imports(tree: ast.AST) -> set[ast.AST]:
    return {
        child
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"
        for stmt in node.body
        for child in ast.walk(stmt)
    }


def test_fenced_django_internals_are_imported_by_django_private_only():
    found = []
    for path in _sources():
        tree = ast.parse(path.read_text())
        typing_only = _type_checking_imports(tree)
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module:
                if node.module in TYPE_ONLY and node in typing_only:
                    continue
                names = {(node.module, alias.name) for alias in node.names}
                if node.module in FENCED_MODULES | TYPE_ONLY or names & FENCED_NAMES:
                    found.append(f"{path.relative_to(ROOT)}: from {node.module} import ...")
            elif isinstance(node, ast.Import):
                fenced = FENCED_MODULES | TYPE_ONLY
                found += [f"{path.relative_to(ROOT)}: import {a.name}" for a in node.names if a.name in fenced]
    assert found == []


def test_object_isolation_reaches_no_private_attribute_of_django_objects():
    source = (ROOT / "tenant_schema" / "object_isolation.py").read_text()
    private = sorted(
        {
            node.attr
            for node in ast.walk(ast.parse(source))
            if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__")
        }
    )
    assert private == ["_state"]  # Model._state (db, adding) is documented API


# -- flags read from the Django backend --------------------------------------------


@pytest.mark.parametrize(
    ("dialect_name", "expected"), [("postgres", 63), ("cockroach", 63), ("mysql", 64), ("sqlite", 63)]
)
def test_max_identifier_length_comes_from_the_django_backend_without_a_connection(dialect_name, expected):
    from tenant_schema.plugins import get_plugins

    dialect = get_plugins().dialects[dialect_name]
    from_django = django_private.backend_max_name_length(dialect.engine)
    assert from_django == (None if dialect_name == "sqlite" else expected)
    assert dialect.max_identifier_length == dialect().max_identifier_length == expected


def test_max_identifier_length_matches_the_servers_connection(server_key):
    from tenant_schema.servers import get_server

    server = get_server(server_key)
    ops = server.connection().ops
    assert server.dialect.max_identifier_length == (ops.max_name_length() or PORTABLE_IDENTIFIER_LENGTH)


def test_max_identifier_length_falls_back_to_the_portable_length_and_a_subclass_overrides_it():
    class Unloadable(Dialect):
        name = "unloadable"
        engine = "tenant_schema_no_such_backend"

    class Short(Unloadable):
        max_identifier_length = 30

    assert django_private.backend_max_name_length(Unloadable.engine) is None
    assert Unloadable.max_identifier_length == Unloadable().max_identifier_length == PORTABLE_IDENTIFIER_LENGTH
    assert Short.max_identifier_length == Short().max_identifier_length == 30


@pytest.mark.parametrize(
    ("dialect_name", "expected"), [("postgres", True), ("cockroach", False), ("mysql", False), ("sqlite", True)]
)
def test_can_rollback_ddl_comes_from_the_django_backend_without_a_connection(dialect_name, expected):
    from tenant_schema.plugins import get_plugins

    dialect = get_plugins().dialects[dialect_name]
    assert django_private.backend_feature(dialect.engine, "can_rollback_ddl", None) is expected
    assert dialect.can_rollback_ddl is dialect().can_rollback_ddl is expected


def test_can_rollback_ddl_agrees_with_each_live_servers_connection(server_key):
    from tenant_schema.servers import get_server

    server = get_server(server_key)
    assert server.dialect.can_rollback_ddl is server.connection().features.can_rollback_ddl


def test_can_rollback_ddl_is_false_without_a_backend_and_a_subclass_overrides_it():
    class Unloadable(Dialect):
        name = "unloadable"
        engine = "tenant_schema_no_such_backend"

    class Transactional(Unloadable):
        can_rollback_ddl = True

    assert Unloadable.can_rollback_ddl is False and Transactional.can_rollback_ddl is True


# -- key columns: a dialect decision -----------------------------------------------


@dataclasses.dataclass
class _Keyed:
    code: str
    email: str = dataclasses.field(default="", metadata={"unique": True})
    note: str = ""


def _planned(dialect: Dialect) -> dict[str, models.Field]:
    return {plan.name: plan.field for plan in plan_dataclass(_Keyed, "code", dialect, {})}


def test_text_keys_become_varchar_on_every_built_in_dialect():
    from tenant_schema.plugins import get_plugins

    for dialect_class in get_plugins().dialects.values():
        fields = _planned(dialect_class())
        for key in ("code", "email"):
            assert type(fields[key]) is models.CharField, (dialect_class.name, key)
            assert fields[key].max_length == KEY_TEXT_LENGTH
        assert type(fields["note"]) is models.TextField
        assert fields["code"].primary_key and fields["email"].unique


def test_a_dialect_decides_its_key_columns():
    from tenant_schema_postgres import PostgresDialect

    class TextKeys(PostgresDialect):
        name = "textkeys"
        schemes = ("textkeys",)

        def key_field_for(self, field):
            return field

    fields = _planned(TextKeys())
    assert type(fields["code"]) is models.TextField and fields["code"].primary_key
    assert type(fields["email"]) is models.TextField and fields["email"].unique
    assert PostgresDialect().key_field_for(models.IntegerField()).__class__ is models.IntegerField
