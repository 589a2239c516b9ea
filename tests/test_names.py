"""Hostile names: rejected with a clear error before any SQL, or quoted and working."""

from __future__ import annotations

from dataclasses import dataclass, field, make_dataclass

import pytest
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from tenant_schema import (
    create_index,
    get_or_create_tenant_db,
    get_tenant_db,
    list_indexes,
    list_tables,
    register_table,
)
from tenant_schema.exceptions import TenantNotFound
from tenant_schema.names import validate_identifier, validate_slug

HOSTILE = [
    "robert'); DROP TABLE students;--",
    'quote"d',
    "back`tick",
    "semi;colon",
    "with space",
    "ünïcödé",
    "名前",
    "",
    "x" * 200,
    "tab\there",
    "new\nline",
    "dash-ed",
    "1starts_with_digit",
    "null\x00byte",
    "trailing_newline\n",
    "trailing_space ",
]
RESERVED = ["select", "order", "table", "group", "user", "where", "limit", "desc"]


class CountingSQL:
    """``execute_wrapper`` recording whether any SQL ran."""

    def __init__(self):
        self.statements = []

    def __call__(self, execute, sql, params, many, context):
        self.statements.append(sql)
        return execute(sql, params, many, context)


BAD_TENANT_IDS = [h for h in HOSTILE if h not in ("dash-ed", "1starts_with_digit")] + [
    "trailing-",
    "-leading",
    "under__",
    "a" * 41,
    "ÜPPER",
    "acme\n",
    "acme\r\n",
    None,
    42,
]


@pytest.mark.parametrize("bad", BAD_TENANT_IDS)
def test_bad_tenant_ids_are_rejected_before_any_sql(bad, server_key):
    from tenant_schema.servers import get_server

    server = get_server(server_key)
    if server.dialect.name == "sqlite":
        files = set(server.path.glob("*")) if server.path.exists() else set()
        with pytest.raises(ValueError, match="invalid tenant slug|must be a string"):
            get_or_create_tenant_db(bad, server=server_key)
        assert (set(server.path.glob("*")) if server.path.exists() else set()) == files
        return
    counter = CountingSQL()
    with server.connection().execute_wrapper(counter):
        with pytest.raises(ValueError, match="invalid tenant slug|must be a string"):
            get_or_create_tenant_db(bad, server=server_key)
    assert counter.statements == []


def test_tenant_id_error_says_what_is_allowed():
    with pytest.raises(ValueError) as excinfo:
        validate_slug("Acme Corp")
    assert "lower-case letters, digits and hyphens" in str(excinfo.value)
    assert "'Acme Corp'" in str(excinfo.value)


@pytest.mark.parametrize("bad", HOSTILE)
def test_bad_table_column_and_index_names_are_rejected_before_any_sql(bad, tenant_db):
    @dataclass
    class Good:
        id: int
        value: str = ""

    counter = CountingSQL()
    with tenant_db.connection.execute_wrapper(counter):
        with pytest.raises(ValueError, match="invalid table name|table name .* characters"):
            register_table(tenant_db, Good, bad)
    assert counter.statements == []
    register_table(tenant_db, Good, "good")
    with pytest.raises(ValueError, match="invalid index name|index name .* characters"):
        create_index(tenant_db, "good", ["value"], index_name=bad)
    with pytest.raises(ValueError, match="invalid column name|column name .* characters"):
        create_index(tenant_db, "good", [bad])
    assert list_tables(tenant_db) == ["good"]
    assert list_indexes(tenant_db, "good") == []


@pytest.mark.parametrize("bad", HOSTILE)
def test_bad_db_columns_in_field_metadata_are_rejected(bad, tenant_db):
    cls = make_dataclass("Weird", [("id", int), ("value", str, field(default="", metadata={"db_column": bad}))])
    with pytest.raises(ValueError, match="invalid column name|column name .* characters"):
        register_table(tenant_db, cls, "weird")
    assert list_tables(tenant_db) == []


def test_non_ascii_field_names_are_rejected(tenant_db):
    cls = make_dataclass("Weird", [("id", int), ("ünïcödé", str, field(default=""))])
    with pytest.raises(ValueError, match="invalid column name"):
        register_table(tenant_db, cls, "weird")
    assert list_tables(tenant_db) == []


def test_reserved_words_are_quoted_and_work(tenant_db):
    cls = make_dataclass(
        "Reserved",
        [("id", int), ("source", str, field(default="", metadata={"db_column": "from"}))]
        + [(w, str, field(default="")) for w in RESERVED],
    )
    table = register_table(tenant_db, cls, "order")
    assert "order" in list_tables(tenant_db)
    name = create_index(tenant_db, "order", ["select", "group"], index_name="index")
    assert [i.name for i in list_indexes(tenant_db, "order")] == [name]
    manager = table.model._default_manager.db_manager(tenant_db.alias)
    manager.create(select="s", group="g", user="u", where="w", source="f")
    assert manager.filter(select="s", group="g", source="f").count() == 1


def test_over_long_names_are_rejected_with_the_limit(tenant_db):
    limit = tenant_db.dialect.max_identifier_length

    @dataclass
    class T:
        id: int

    with pytest.raises(ValueError, match=f"the limit here is {limit}"):
        register_table(tenant_db, T, "t" * (limit + 1))
    register_table(tenant_db, T, "t" * limit)
    assert list_tables(tenant_db) == ["t" * limit]


def test_unknown_tenant_is_a_clear_error(server_key):
    with pytest.raises(TenantNotFound, match="no tenant 'never-created' is registered"):
        get_tenant_db("never-created", server=server_key)


def test_ids_in_other_spellings_name_the_same_tenant(server_key):
    """``tenant_123`` (the seed's own example) and ``Tenant-123`` are ``tenant-123``: one tenant, one database."""
    from tenant_schema import drop_tenant_db

    from .conftest import bare_tenants, new_tenant_id

    slug = new_tenant_id()  # "t" + 10 hex digits
    typed = "T_" + slug[1:]
    with bare_tenants():
        first = get_or_create_tenant_db(typed, server=server_key)
    try:
        assert first.slug == "t-" + slug[1:]
        assert get_tenant_db(first.slug) is first
        assert get_tenant_db(typed) is first
        assert get_or_create_tenant_db(typed.lower()) is first
    finally:
        drop_tenant_db(typed)


def test_normalising_tells_exactly_what_is_allowed():
    from tenant_schema.names import normalize_slug

    assert normalize_slug("tenant_123") == "tenant-123"
    assert normalize_slug("ACME") == "acme"
    with pytest.raises(ValueError, match="invalid tenant slug 'Acme Corp': use 1-40 lower-case letters"):
        normalize_slug("Acme Corp")


IDENTIFIER_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_")
TENANT_ID_CHARS = set("abcdefghijklmnopqrstuvwxyz0123456789-")
# Draw mostly from the allowed alphabet, with hostile characters mixed in.
NAMEISH = st.text(
    alphabet=st.sampled_from(sorted(IDENTIFIER_CHARS | TENANT_ID_CHARS) + list(" \n\r\t;'\"`.é名\x00")), max_size=70
)


def is_safe_identifier(text: str, limit: int = 63) -> bool:
    """An oracle written independently of the validator's regular expression."""
    return 0 < len(text) <= limit and set(text) <= IDENTIFIER_CHARS and not text[0].isdigit()


def is_dns_label(text: str) -> bool:
    return 0 < len(text) <= 40 and set(text) <= TENANT_ID_CHARS and text[0] != "-" and text[-1] != "-"


@hsettings(max_examples=500)
@given(st.one_of(NAMEISH, st.text(max_size=70)))
def test_identifier_validation_accepts_exactly_safe_names(text):
    try:
        validate_identifier(text, "table name", 63)
    except ValueError as exc:
        assert "table name" in str(exc)
        assert not is_safe_identifier(text)
    else:
        assert is_safe_identifier(text)


@hsettings(max_examples=500)
@given(st.one_of(NAMEISH, st.text(max_size=60)))
def test_tenant_id_validation_accepts_exactly_dns_labels(text):
    try:
        validate_slug(text)
    except ValueError:
        assert not is_dns_label(text)
    else:
        assert is_dns_label(text)


@hsettings(max_examples=300)
@given(st.one_of(NAMEISH, st.text(max_size=60)))
def test_normalising_accepts_exactly_case_and_underscore_variants_of_dns_labels(text):
    from tenant_schema.names import normalize_slug

    folded = text.lower().replace("_", "-") if text.isascii() else text
    try:
        result = normalize_slug(text)
    except ValueError:
        assert not is_dns_label(folded)
    else:
        assert is_dns_label(folded) and result == folded


def test_a_trailing_newline_cannot_reach_another_tenants_schema():
    """libpq splits startup options on whitespace: ``victim\n`` would select ``victim``."""
    from tenant_schema.servers import parse_server

    server = parse_server("pgs", "postgres://postgres@127.0.0.1:5432/shared?isolation=schema")
    with pytest.raises(ValueError, match="invalid tenant schema name"):
        server.dialect.tenant_settings(server, "tenant_victim\n")
    with pytest.raises(ValueError, match="invalid tenant slug"):
        get_or_create_tenant_db("victim\n", server="pgschema")
