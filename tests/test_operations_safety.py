"""Operations that must not hang or leak (issue 7, section 6).

- a purge ends the tenant database's other sessions instead of waiting a day
  for their locks, or fails within seconds saying why;
- no error message, exception or ``manage.py check`` line shows a server
  password;
- command options that name nothing (``--server ''``) are refused;
- admin URLs with an id that is not a tenant's are 404s, never 500s;
- resolvers leave public paths, IP hosts and ``www`` without a tenant;
- a database connection dropped in the middle of ``register_tables``,
  ``tenant_migrate`` or ``batch_create`` gives an error (not a hang), a
  truthful status, and nothing half-applied once retried.
"""

from __future__ import annotations

import contextlib
import dataclasses
import re
import threading
import time
import traceback
from collections.abc import Callable
from typing import Any

import pytest

from tenant_schema import list_tables
from tenant_schema.models import Tenant

from .conftest import new_tenant_id, require_server

pytestmark = pytest.mark.django_db(transaction=True)

# -- helpers ----------------------------------------------------------------------


def bounded(fn: Callable[[], Any], timeout: float, *, release: Callable[[], None] = lambda: None):
    """Run ``fn`` in a thread; ``(result, exception, seconds)``.

    A call still running after ``timeout`` seconds fails the test; ``release``
    is called first so the stuck thread can finish (the test must not hang).
    """
    from django.db import connections

    outcome: dict[str, Any] = {}

    def target():
        started = time.monotonic()
        try:
            outcome["result"] = fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            outcome["error"] = exc
        finally:
            outcome["seconds"] = time.monotonic() - started
            connections.close_all()

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        release()
        thread.join(60)
        pytest.fail(f"still running after {timeout}s: it would have hung")
    return outcome.get("result"), outcome.get("error"), outcome["seconds"]


def run(*args: str) -> tuple[str, str]:
    """Run a management command; its (stdout, stderr)."""
    import io

    from django.core.management import call_command

    out, err = io.StringIO(), io.StringIO()
    call_command(*args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def mysql_session(database: str | None = None):
    """A raw MySQLdb connection to the ``mysql`` test server (outside Django)."""
    import MySQLdb

    from tenant_schema.servers import get_server

    settings = get_server("mysql").settings
    kwargs = {"host": settings["HOST"] or "127.0.0.1", "user": settings["USER"], "passwd": settings["PASSWORD"]}
    if settings["PORT"]:
        kwargs["port"] = int(settings["PORT"])
    if database:
        kwargs["db"] = database
    return MySQLdb.connect(**kwargs)


def database_is_there(tenant: Tenant) -> bool:
    from tenant_schema.management.inspection import database_exists

    return database_exists(tenant)


# -- 1. a purge does not wait for other sessions ----------------------------------


@pytest.mark.parametrize("server_key", ["mysql", "pg", "pgschema"])
def test_purge_ends_the_tenants_open_transactions_instead_of_waiting(tenant_factory, server_key, db_access):
    """A tenant connection in the middle of a transaction does not block a purge."""
    from tenant_schema.lifecycle.archive import purge_tenant

    require_server("pg" if server_key == "pgschema" else server_key)
    tenant = tenant_factory(server=server_key)
    blocker = open_transaction_on(tenant)
    try:
        _, error, seconds = bounded(lambda: purge_tenant(tenant.slug), 20, release=blocker.close)
    finally:
        blocker.close()
    assert error is None, f"purge failed: {error!r}"
    assert seconds < 15
    assert not Tenant.objects.filter(slug=tenant.slug).exists()
    assert not database_is_there(tenant)


def test_mysql_purge_blocked_from_another_database_fails_in_seconds_and_can_be_retried(
    tenant_factory, monkeypatch, db_access
):
    """A lock held through another database's connection is not killed: the purge says so, quickly."""
    from django.core.management.base import CommandError
    from tenant_schema_mysql import MySQLDialect

    require_server("mysql")
    monkeypatch.setattr(MySQLDialect, "drop_lock_wait_timeout", 2)
    tenant = tenant_factory(server="mysql")
    blocker = mysql_session()  # no current database: processlist cannot tie it to the tenant
    cursor = blocker.cursor()
    cursor.execute("BEGIN")
    cursor.execute(f"SELECT COUNT(*) FROM `{tenant.database_name}`.tenantapp_note")
    cursor.execute("SELECT CONNECTION_ID()")
    (session,) = cursor.fetchone()
    try:
        _, error, seconds = bounded(
            lambda: run("tenant_drop", tenant.slug, "--purge", "--noinput"), 30, release=blocker.close
        )
    finally:
        if error is None:
            blocker.close()
    assert isinstance(error, CommandError), repr(error)
    message = str(error)
    assert "\n" not in message
    assert f"could not drop database '{tenant.database_name}'" in message
    assert "after 2s" in message and "nothing was dropped" in message
    assert str(session) in message, "the session holding the lock is named"
    assert "row is kept" in message
    assert seconds < 15
    assert Tenant.objects.get(slug=tenant.slug).status == Tenant.Status.ARCHIVED, "no longer served"
    assert database_is_there(tenant)
    assert "tenantapp_note" in list_tables(tenant.database), "nothing was dropped"
    tenant.database.close()

    blocker.close()
    run("tenant_drop", tenant.slug, "--purge", "--noinput")
    assert not Tenant.objects.filter(slug=tenant.slug).exists()
    assert not database_is_there(tenant)


class _Session:
    def __init__(self, raw, close: Callable[[], None]) -> None:
        self.raw = raw
        self._close = close

    def close(self) -> None:
        try:
            self._close()
        except Exception:  # noqa: BLE001 - already killed by the purge
            pass


def open_transaction_on(tenant: Tenant) -> _Session:
    """A session outside this process's Django connections, in a transaction that read a tenant table."""
    server = tenant.database.server
    if server.dialect.name == "mysql":
        raw = mysql_session(tenant.database_name)
        cursor = raw.cursor()
        cursor.execute("BEGIN")
        cursor.execute("SELECT COUNT(*) FROM tenantapp_note")
        return _Session(raw, raw.close)
    import psycopg

    settings = tenant.database.dialect.tenant_settings(server, tenant.database_name)
    options = settings.get("OPTIONS", {})
    raw = psycopg.connect(
        host=settings["HOST"] or "127.0.0.1",
        port=settings["PORT"] or 5432,
        user=settings["USER"],
        password=settings["PASSWORD"] or None,
        dbname=settings["NAME"],
        # A schema tenant's own path (its settings may set it per transaction instead).
        options=f"-c search_path={tenant.database_name}"
        if server.isolation == "schema"
        else options.get("options", ""),
    )
    raw.execute("SELECT COUNT(*) FROM tenantapp_note")  # psycopg opens a transaction implicitly
    return _Session(raw, raw.close)


# -- 2. no password in any error -----------------------------------------------------

SECRET = "s3cret"
LEAKY_URLS = [
    "postgres://u:s3cret@host:5432/?conn_max_age=x",  # one of our options
    "postgres://u:s3cret@host:5432/?isolation=sideways",
    "postgres://u:s3cret@host:5432/?conn_health_checks=maybe",
    "mysql://u:s3cret@host:3306/?isolation=schema",  # a dialect without schema isolation
    "postgres://u:s3cret@host:notaport/",  # dj-database-url's parse error
    "postgres://u:s3cret@host:99999/",
    "postgres://u:s3cret@[::1:5432/",  # broken IPv6 host
    "postgres://u:ab/s3cret@host:5432/",  # an unencoded "/" in the password
    "postgres://u:s3c%72et@host:notaport/",  # percent-encoded (decodes to s3cret)
    "nosuch://u:s3cret@h/",  # no dialect for the scheme
    "postgres:/u:s3cret@host/",  # not a URL at all
    "u:s3cret@host",
    "u:s3cret@host://db/",  # what looks like a scheme holds the password
]


@pytest.mark.parametrize("url", LEAKY_URLS)
def test_a_bad_server_url_never_shows_its_password(url):
    from django.core.exceptions import ImproperlyConfigured

    from tenant_schema.servers import parse_server

    with pytest.raises(ImproperlyConfigured) as caught:
        parse_server("pg", url)
    message = str(caught.value)
    assert message.startswith("tenant server 'pg': "), message
    assert SECRET not in message and "s3c%72et" not in message
    logged = "".join(traceback.format_exception(caught.value))  # what a log of it shows, causes included
    assert SECRET not in logged and "s3c%72et" not in logged


@pytest.mark.parametrize(
    "url, expected",
    [
        (
            "postgres://u:s3cret@host:5432/?conn_max_age=x",
            "conn_max_age must be a whole number of seconds or 'none', not 'x'",
        ),
        (
            "postgres://u:s3cret@host:notaport/",
            "cannot parse its URL postgres://u:***@host:notaport/: the port is not a number from 0 to 65535",
        ),
        ("nosuch://u:s3cret@h/", "no dialect plugin handles URL scheme 'nosuch'; known schemes: "),
        ("postgres:/u:s3cret@host/", "is not a URL like postgres://user@host:5432/"),
    ],
)
def test_the_error_still_says_what_is_wrong(url, expected):
    from django.core.exceptions import ImproperlyConfigured

    from tenant_schema.servers import parse_server

    with pytest.raises(ImproperlyConfigured, match=re.escape(expected)):
        parse_server("pg", url)


def test_a_plugins_parse_error_is_scrubbed_too():
    """Whatever raised while parsing (here a plugin quoting the URL), the password is masked."""
    from django.core.exceptions import ImproperlyConfigured

    from tenant_schema import hookimpl
    from tenant_schema.plugins import get_plugin_manager
    from tenant_schema.servers import parse_server

    class Quoting:
        @hookimpl(tryfirst=True)
        def tenant_schema_server_settings(self, dialect, url):
            raise RuntimeError(f"my plugin cannot read {url}")

    pm = get_plugin_manager()
    pm.register(Quoting(), name="quoting")
    try:
        with pytest.raises(ImproperlyConfigured) as caught:
            parse_server("pg", "postgres://u:s3cret@host:5432/")
    finally:
        pm.unregister(name="quoting")
    assert str(caught.value) == "tenant server 'pg': my plugin cannot read postgres://u:***@host:5432/"


@pytest.mark.parametrize("url", LEAKY_URLS)
def test_manage_py_check_never_shows_the_password(url, settings):
    import io

    from django.core.management import call_command
    from django.core.management.base import SystemCheckError
    from django.test import override_settings

    out = io.StringIO()
    servers = {**settings.TENANT_SCHEMA["SERVERS"], "broken": url}
    with override_settings(TENANT_SCHEMA={**settings.TENANT_SCHEMA, "SERVERS": servers}):
        with pytest.raises(SystemCheckError) as caught:
            call_command("check", stdout=out, stderr=out)
    text = str(caught.value) + out.getvalue()
    broken = [line for line in text.splitlines() if "tenant server 'broken'" in line]
    assert broken and all(line.count("tenant server 'broken'") == 1 for line in broken), broken
    assert SECRET not in text


def test_runtime_errors_of_a_bad_server_hide_the_password_too(settings):
    """``get_server`` (used by every operation) raises the same masked error."""
    from django.core.exceptions import ImproperlyConfigured

    from tenant_schema.servers import get_server

    settings.TENANT_SCHEMA = {
        **settings.TENANT_SCHEMA,
        "SERVERS": {**settings.TENANT_SCHEMA["SERVERS"], "broken": LEAKY_URLS[4]},
    }
    with pytest.raises(ImproperlyConfigured) as caught:
        get_server("broken")
    assert SECRET not in str(caught.value)


def test_a_short_password_is_masked_without_garbling_the_message():
    from django.core.exceptions import ImproperlyConfigured

    from tenant_schema.servers import mask_secrets, parse_server

    with pytest.raises(ImproperlyConfigured) as caught:
        parse_server("pg", "postgres://u:a@host:notaport/?conn_max_age=x")
    assert str(caught.value) == (
        "tenant server 'pg': cannot parse its URL postgres://u:***@host:notaport/?conn_max_age=x: "
        "the port is not a number from 0 to 65535"
    )
    url = "postgres://u:a@h/"
    assert mask_secrets(f"password 'a' rejected for {url}", url) == "password '***' rejected for postgres://u:***@h/"


@pytest.mark.parametrize(
    "url, shown",
    [
        ("postgres://app:s3cret@db:5432/", "postgres://app:***@db:5432/"),
        ("postgres://app:p%40ss@db/", "postgres://app:***@db/"),
        ("postgres://app:ab/s3cret@db/x", "postgres://app:***@db/x"),
        ("postgres://app@db/", "postgres://app@db/"),
        ("sqlite:////var/tenants/", "sqlite:////var/tenants/"),
    ],
)
def test_mask_url(url, shown):
    from tenant_schema.servers import mask_url

    assert mask_url(url) == shown


# -- 3. command options that name nothing are refused -----------------------------------

CONFIGURED = "configured servers: {servers}"  # filled in from the settings when the test runs
OPTION_CASES = [
    (["tenant_register", "acme", "--server", ""], f"unknown tenant server ''; {CONFIGURED}"),
    (["tenant_register", "acme", "--server", " default"], f"unknown tenant server ' default'; {CONFIGURED}"),
    (["tenant_register", "acme", "--name", "x" * 201], "--name must be at most 200 characters, not 201"),
    (["tenant_register", ""], "invalid tenant slug ''"),
    (["tenant_tables", ""], "invalid tenant slug ''"),
    (["tenant_drop", "", "--purge", "--noinput"], "invalid tenant slug ''"),
    (["tenant_migrate", ""], "invalid tenant slug ''"),
    (["tenant_migrate", "--jobs", "-3"], "--jobs must be 1 or more, not -3"),
    (["migrate", "--database", ""], "unknown database '': use one of default, or tenant:<slug> for one tenant"),
    (["migrate", "--database", "nosuch"], "unknown database 'nosuch': use one of default, or tenant:<slug>"),
    (["migrate", "--database", "tenant:"], "invalid tenant slug ''"),
    (["migrate", "--database", "tenant:nobody"], "no tenant 'nobody' is registered"),
]


@pytest.mark.parametrize("args, expected", OPTION_CASES, ids=[" ".join(map(repr, a)) for a, _ in OPTION_CASES])
def test_options_that_name_nothing_are_one_clear_error(args, expected, settings):
    from django.core.management.base import CommandError

    with pytest.raises(CommandError) as caught:
        run(*args)
    message = str(caught.value)
    assert expected.replace("{servers}", ", ".join(sorted(settings.TENANT_SCHEMA["SERVERS"]))) in message
    assert "\n" not in message
    assert not Tenant.objects.exists(), "nothing was registered"


def test_a_name_is_stored_without_surrounding_blanks(db_access):
    from tenant_schema.lifecycle.archive import purge_tenant

    slug = new_tenant_id()
    run("tenant_register", slug, "--name", "  Acme Ltd ")
    tenant = Tenant.objects.get(slug=slug)
    try:
        assert tenant.name == "Acme Ltd"
    finally:
        purge_tenant(tenant)


# -- 4. admin URLs with an id that is no tenant's are 404s ----------------------------------

BAD_IDS = ["abc", "1.5", "-1", "99999999999999999999999", "0x10", "1%2F2", "%20"]


@pytest.fixture
def superuser_client(client, django_user_model):
    user = django_user_model.objects.create_superuser("root", password="correct horse battery staple")
    client.force_login(user)
    return client


@pytest.mark.parametrize("object_id", BAD_IDS)
@pytest.mark.parametrize("view", ["change", "purge", "run/provision", "run/archive", "history"])
def test_admin_views_answer_404_for_an_id_that_is_no_tenants(superuser_client, object_id, view):
    url = f"/admin/tenant_schema/tenant/{object_id}/{view}/"
    for method in ("get", "post"):
        response = getattr(superuser_client, method)(url, {"slug": object_id} if method == "post" else None)
        assert response.status_code == 404, (method, url, response.status_code)


@pytest.mark.parametrize("view", ["change", "purge", "run/archive", "history"])
def test_without_permission_every_id_is_403_so_ids_do_not_leak(client, django_user_model, view):
    user = django_user_model.objects.create_user("staff", password="correct horse battery staple", is_staff=True)
    client.force_login(user)
    assert client.post(f"/admin/tenant_schema/tenant/abc/{view}/").status_code == 403
    assert client.post(f"/admin/tenant_schema/tenant/12345/{view}/").status_code == 403


# -- 5. what the resolvers never read as a slug ----------------------------------------


def _static(request, name):
    from django.http import HttpResponse

    return HttpResponse(f"static {name} tenant={request.tenant}")


def _pricing(request):
    from django.http import HttpResponse

    return HttpResponse(f"pricing tenant={request.tenant}")


def _urlpatterns():
    from django.contrib import admin
    from django.urls import include, path

    return [
        path("admin/", admin.site.urls),
        path("static/<path:name>", _static),
        path("pricing/", _pricing),
        path("", include("tests.tenantapp.urls")),
    ]


urlpatterns = _urlpatterns()  # this module is the URLconf of the routing tests below
ROUTING = pytest.mark.urls(__name__)


def use(settings, **options) -> None:
    settings.TENANT_SCHEMA = {**settings.TENANT_SCHEMA, **options}


@pytest.fixture
def routed(tenant_factory):
    """A ready tenant with one note."""
    from tenant_schema import tenant_context
    from tests.tenantapp.models import Note

    tenant = tenant_factory()
    with tenant_context(tenant):
        Note.objects.create(title="hello")
    return tenant


@ROUTING
def test_path_resolver_serves_public_paths_without_a_tenant(routed, settings):
    from django.test import Client

    use(settings, RESOLVER="path")
    client = Client()
    admin = client.get("/admin/")
    assert admin.status_code == 302 and admin["Location"].startswith("/admin/login/"), "the admin, not a 404"
    assert client.get("/admin/login/").status_code == 200
    assert client.get("/static/css/app.css").content == b"static css/app.css tenant=None"
    assert client.get("/shared/").status_code == 404, "any other first segment is still a slug"
    assert client.get(f"/{routed.slug}/notes/").json()["titles"] == ["hello"]
    assert client.get("/nobody/notes/").status_code == 404


@ROUTING
def test_path_resolver_public_paths_are_configurable(routed, settings):
    from django.test import Client

    use(settings, RESOLVER="path", PUBLIC_PATHS=["/admin/", "/static/", "/pricing/", "/"])
    client = Client()
    assert client.get("/pricing/").content == b"pricing tenant=None"
    assert client.get("/").status_code == 404, "'/' is the home page only: the URLconf has none here"
    assert client.get(f"/{routed.slug}/notes/").json()["tenant"] == routed.slug
    use(settings, RESOLVER="path", PUBLIC_PATHS=[])
    assert client.get("/admin/").status_code == 404, "nothing public: /admin/ is tenant 'admin'"


@ROUTING
async def test_public_paths_under_asgi(routed, settings):
    from django.test import AsyncClient

    use(settings, RESOLVER="path")
    response = await AsyncClient().get("/static/app.js")
    assert response.content == b"static app.js tenant=None"


@pytest.mark.parametrize(
    "host",
    [
        "127.0.0.1",
        "127.0.0.1:8000",
        "10.20.30.40",
        "[::1]",
        "[::1]:8000",
        "[2001:db8::1]:443",
        "www.example.com",
        "WWW.Example.com",
        "www.localhost:8000",
        "example.com",
        "localhost",
    ],
)
@ROUTING
def test_subdomain_resolver_leaves_ip_hosts_and_www_without_a_tenant(routed, host):
    from django.test import Client

    response = Client(HTTP_HOST=host).get("/shared/")
    assert response.status_code == 200, host
    assert response.content == b"shared tenant=None"


@ROUTING
def test_excluded_subdomains_are_configurable(routed, settings):
    from django.test import Client

    use(settings, EXCLUDED_SUBDOMAINS=["www", "app"])
    assert Client(HTTP_HOST="app.example.com").get("/shared/").content == b"shared tenant=None"
    assert Client(HTTP_HOST=f"{routed.slug}.example.com").get("/notes/").json()["tenant"] == routed.slug
    assert Client(HTTP_HOST="nobody.example.com").get("/notes/").status_code == 404
    use(settings, EXCLUDED_SUBDOMAINS=[])
    assert Client(HTTP_HOST="www.example.com").get("/shared/").status_code == 404, "'www' is a slug now"


@pytest.mark.parametrize(
    "options, expected",
    [
        ({"PUBLIC_PATHS": "/admin/"}, 'TENANT_SCHEMA["PUBLIC_PATHS"] must be a list of paths starting with "/"'),
        ({"PUBLIC_PATHS": ["admin/"]}, "'admin/' does not start with \"/\""),
        ({"EXCLUDED_SUBDOMAINS": "www"}, 'TENANT_SCHEMA["EXCLUDED_SUBDOMAINS"] must be a list of host labels'),
        ({"EXCLUDED_SUBDOMAINS": ["www.example.com"]}, "'www.example.com' is not a single host label"),
    ],
)
def test_check_reports_bad_exclusions(settings, options, expected):
    from tenant_schema.checks import check_settings

    use(settings, **options)
    messages = [e.msg for e in check_settings()]
    assert any(expected in m for m in messages), messages


# -- 6. the server drops the connection half-way ----------------------------------------
#
# A ``Killer`` is an execute wrapper on one tenant's connections (installed as
# each connects, so it follows reconnects and threads): right before statement
# number ``at`` it ends its own session from a separate session, as a server
# restart, a failover or a DBA's kill would, and waits until the server has.

KILLABLE = ["pg", "pgschema", "mysql"]
WATCHED = ("tenant:", "tenant_schema:admin:")


class Killer:
    def __init__(self, slug: str, at: int | None = None) -> None:
        self.slug = slug
        self.at = at
        self.statements: list[str] = []
        self.killed_before: str | None = None

    def watches(self, alias: str) -> bool:
        return alias.startswith(WATCHED) and alias.endswith(f":{self.slug}")

    def __call__(self, execute, sql, params, many, context):
        self.statements.append(sql)
        if len(self.statements) == self.at:
            end_session(context["connection"])
            self.killed_before = sql
        return execute(sql, params, many, context)


def end_session(connection) -> None:
    """End ``connection``'s server session from another session; return once it is gone."""
    if connection.vendor == "postgresql":
        import psycopg

        from tenant_schema.servers import get_server

        pid = connection.connection.info.backend_pid
        s = get_server("pg").settings
        with psycopg.connect(
            host=s["HOST"] or "127.0.0.1",
            port=s["PORT"] or 5432,
            user=s["USER"],
            password=s["PASSWORD"] or None,
            dbname="postgres",
            autocommit=True,
        ) as admin:
            ended = admin.execute("SELECT pg_terminate_backend(%s, 10000)", [pid]).fetchone()[0]
        assert ended, f"backend {pid} did not end"
        return
    assert connection.vendor == "mysql", connection.vendor
    session = connection.connection.thread_id()
    admin = mysql_session()
    try:
        cursor = admin.cursor()
        cursor.execute(f"KILL CONNECTION {int(session)}")
        for _ in range(100):
            cursor.execute("SELECT COUNT(*) FROM information_schema.processlist WHERE id = %s", [session])
            if cursor.fetchone()[0] == 0:
                return
            time.sleep(0.05)
        raise AssertionError(f"session {session} did not end")
    finally:
        admin.close()


@contextlib.contextmanager
def watching(killer: Killer):
    """``killer`` on every connection of its tenant, open now or opened meanwhile (any thread)."""
    from django.db import connections
    from django.db.backends.signals import connection_created

    def install(sender, connection, **kwargs):
        if killer.watches(connection.alias) and killer not in connection.execute_wrappers:
            connection.execute_wrappers.append(killer)

    for alias in list(connections.settings):
        if killer.watches(alias) and hasattr(connections._connections, alias):
            install(None, connections[alias])
    connection_created.connect(install, weak=False)
    try:
        yield killer
    finally:
        connection_created.disconnect(install)
        for alias in list(connections.settings):
            if killer.watches(alias) and hasattr(connections._connections, alias):
                wrappers = connections[alias].execute_wrappers
                if killer in wrappers:
                    wrappers.remove(killer)


def live_server(server_key: str) -> None:
    require_server("pg" if server_key == "pgschema" else server_key)


def shape(tenant_db) -> dict:
    """Tables with their columns and every constraint and index (names left out), read from the database."""
    connection = tenant_db.connection
    out = {}
    with connection.cursor() as cursor:
        for table in connection.introspection.table_names(cursor):
            description = connection.introspection.get_table_description(cursor, table)
            columns = sorted((c.name, bool(c.null_ok)) for c in description)
            constraints = sorted(
                (
                    tuple(info["columns"]),
                    bool(info["primary_key"]),
                    bool(info["unique"]),
                    tuple(info["foreign_key"] or ()),
                    bool(info["index"]),
                )
                for info in connection.introspection.get_constraints(cursor, table).values()
            )
            out[table] = (columns, constraints)
    tenant_db.close()
    return out


@dataclasses.dataclass
class Customer:
    id: int
    email: str = dataclasses.field(metadata={"max_length": 100, "unique": True})
    city: str = dataclasses.field(default="", metadata={"max_length": 50, "index": True})


@dataclasses.dataclass
class Invoice:
    id: int
    customer: Customer
    total: float = 0.0


BATCH = [(Invoice, "invoices"), (Customer, "customers")]


def kill_points(statements: list[str]) -> list[int]:
    """1-based statement numbers worth killing before: the first, the first and last CREATE TABLE,
    the first deferred ALTER TABLE / CREATE INDEX, the migration records, the last."""
    picks = {1, len(statements)}
    creates = [i for i, s in enumerate(statements, 1) if s.lstrip().startswith("CREATE TABLE")]
    picks |= {creates[0], creates[-1]} if creates else set()
    for prefix in ("ALTER TABLE", "CREATE INDEX", "INSERT INTO"):
        found = [i for i, s in enumerate(statements, 1) if s.lstrip().startswith(prefix)]
        picks |= {found[0]} if found else set()
    migrations = [i for i, s in enumerate(statements, 1) if "django_migrations" in s and "INSERT" in s]
    picks |= {migrations[0]} if migrations else set()
    return sorted(picks)


def attempt_then_retry(attempt: Callable[[], Any], retry: Callable[[], Any] | None = None):
    """``attempt()``, then (as the next request or task would, after Django closed the
    connections that failed) ``retry()``, in one thread; ``(first error, retry result)``."""
    from django.db import close_old_connections

    def scenario():
        try:
            attempt()
        except Exception as exc:  # noqa: BLE001 - what the caller sees
            first = exc
        else:
            first = None
        close_old_connections()  # what Django runs between requests; workers should too
        return first, (retry or attempt)()

    result, error, _ = bounded(scenario, 120)
    if error is not None:
        raise error
    return result


def counted(slug: str, fn: Callable[[], Any]) -> tuple[list[str], Any]:
    """The statements ``fn()`` runs on ``slug``'s connections (in a thread, as the attempts run), and its result."""
    counter = Killer(slug)
    with watching(counter):
        result, error, _ = bounded(fn, 120)
    if error is not None:
        raise error
    return counter.statements, result


@pytest.mark.parametrize("server_key", KILLABLE)
def test_register_tables_dropped_at_any_statement_errors_and_a_retry_completes(make_tenant_db, server_key):
    from django.db import DatabaseError

    from tenant_schema import register_tables

    live_server(server_key)
    clean = make_tenant_db(server_key)
    clean.close()
    statements, _ = counted(clean.slug, lambda: register_tables(clean, BATCH))
    expected = shape(clean)
    assert {"customers", "invoices"} <= set(expected)

    for at in range(1, len(statements) + 1):
        tenant_db = make_tenant_db(server_key)
        tenant_db.close()
        killer = Killer(tenant_db.slug, at)
        with watching(killer):
            first, tables = attempt_then_retry(lambda: register_tables(tenant_db, BATCH))
        where = f"killed before statement {at} {' '.join(statements[at - 1].split())[:60]!r}"
        assert killer.killed_before is not None, f"{where}: it never ran"
        assert isinstance(first, DatabaseError), f"{where}: {first!r}"
        assert set(tables) == {"customers", "invoices"}
        assert shape(tenant_db) == expected, f"{where}: incomplete after the retry"
        customers = tables["customers"].model._default_manager.db_manager(tenant_db.alias)
        customers.create(email=f"a{at}@example.com")
        tenant_db.close()


@pytest.mark.parametrize("server_key", KILLABLE)
def test_registration_dropped_half_way_is_failed_with_the_error_and_a_retry_completes(server_key, db_access):
    from django.db import DatabaseError

    from tenant_schema.lifecycle.archive import purge_tenant
    from tenant_schema.lifecycle.register import register_tenant
    from tests.tenantapp.helpers import unapplied

    live_server(server_key)
    slug = new_tenant_id()
    statements, clean = counted(slug, lambda: register_tenant(slug, server=server_key))
    expected = shape(clean.database)
    purge_tenant(clean)

    problems = []
    for at in kill_points(statements):
        slug = new_tenant_id()
        killer = Killer(slug, at)
        where = f"killed before statement {at} {' '.join(statements[at - 1].split())[:60]!r}"
        seen: dict[str, Any] = {}

        def look_then_retry():
            seen["row"] = Tenant.objects.get(slug=slug)  # what an operator sees before retrying
            return register_tenant(slug, server=server_key)

        try:
            with watching(killer):
                first, tenant = attempt_then_retry(lambda: register_tenant(slug, server=server_key), look_then_retry)
            assert isinstance(first, DatabaseError), f"{first!r}"
            row = seen["row"]
            assert row.status == Tenant.Status.FAILED, row.status
            assert row.last_error.startswith(type(first).__name__), row.last_error
            assert str(first).strip().splitlines()[0] in row.last_error, row.last_error
            assert tenant.status == Tenant.Status.READY and tenant.last_error == ""
            assert shape(tenant.database) == expected, "incomplete after the retry"
            assert not unapplied(tenant)
        except Exception as exc:  # noqa: BLE001 - every kill point is reported
            problems.append(f"{where}: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
        finally:
            row = Tenant.objects.filter(slug=slug).first()
            if row is not None:
                row.database.close()
                try:
                    purge_tenant(row)
                except Exception:  # noqa: BLE001 - a database the registry refuses to drop
                    drop_leftover(row)
    assert not problems, "\n".join(problems)


def drop_leftover(tenant: Tenant) -> None:
    """Drop a test tenant's database by hand (the registry refuses one without its ownership marker)."""
    from tenant_schema.plugins import get_plugins
    from tenant_schema.servers import get_server

    server = get_server(tenant.server)
    get_plugins().hook.tenant_schema_drop_database(dialect=server.dialect, server=server, name=tenant.database_name)
    Tenant.objects.filter(pk=tenant.pk).delete()


def back_to_0001(tenant: Tenant) -> None:
    """The tenant one migration behind (0002 adds ``Note.pinned`` with an index), through Django's migrate."""
    from django.core.management import call_command

    call_command("migrate", "tenantapp", "0001", database=tenant.database.alias, verbosity=0)
    tenant.database.close()


def note_state(tenant: Tenant) -> tuple[bool, bool, bool]:
    """(``pinned`` column there, its index there, 0002 recorded), read from the database."""
    connection = tenant.database.connection
    with connection.cursor() as cursor:
        columns = {c.name for c in connection.introspection.get_table_description(cursor, "tenantapp_note")}
        indexed = any(
            info["columns"] == ["pinned"] and info["index"]
            for info in connection.introspection.get_constraints(cursor, "tenantapp_note").values()
        )
        cursor.execute(
            "SELECT COUNT(*) FROM django_migrations WHERE app = %s AND name = %s", ["tenantapp", "0002_note_pinned"]
        )
        recorded = cursor.fetchone()[0] == 1
    tenant.database.close()
    return "pinned" in columns, indexed, recorded


def migrate_kill_points(statements: list[str]) -> list[int]:
    """The first statement, every DDL statement, the migration record and the last one."""
    picks = {1, len(statements)}
    for i, sql in enumerate(statements, 1):
        head = sql.lstrip().upper()
        if head.startswith(("ALTER", "CREATE", "DROP")) or (head.startswith("INSERT") and "DJANGO_MIGRATIONS" in head):
            picks.add(i)
    return sorted(picks)


@pytest.mark.parametrize("server_key", KILLABLE)
def test_tenant_migrate_dropped_half_way_reports_it_and_a_rerun_completes(tenant_factory, server_key):
    """Each kill point on a fresh tenant one migration behind; the rerun must finish the job.

    Where DDL cannot roll back (MySQL) a migration cut in half cannot always be
    finished automatically; then the rerun's report must say the tenant was
    left partly migrated.
    """
    import io

    from django.core.management import call_command
    from django.core.management.base import CommandError

    from tenant_schema.lifecycle.archive import purge_tenant

    live_server(server_key)
    probe = tenant_factory(server=server_key)
    back_to_0001(probe)
    statements, _ = counted(probe.slug, lambda: run("tenant_migrate", probe.slug, "--no-progress"))
    assert note_state(probe) == (True, True, True)

    problems = []
    for at in migrate_kill_points(statements):
        tenant = tenant_factory(server=server_key)
        back_to_0001(tenant)
        killer = Killer(tenant.slug, at)
        where = f"killed before statement {at} {' '.join(statements[at - 1].split())[:60]!r}"
        seen: dict[str, Any] = {}

        def attempt():
            run("tenant_migrate", tenant.slug, "--no-progress")

        def look_then_rerun():
            seen["state"] = note_state(tenant)
            seen["status"] = Tenant.objects.get(slug=tenant.slug).status
            out, err = io.StringIO(), io.StringIO()
            try:
                call_command("tenant_migrate", tenant.slug, "--no-progress", stdout=out, stderr=err)
            except CommandError as exc:
                return exc, err.getvalue()
            return None, err.getvalue()

        try:
            with watching(killer):
                first, (rerun_error, rerun_stderr) = attempt_then_retry(attempt, look_then_rerun)
            assert killer.killed_before is not None, "it never ran"
            assert isinstance(first, CommandError), repr(first)
            assert str(first) == f"1 of 1 tenant failed to migrate: {tenant.slug}"
            assert seen["status"] == Tenant.Status.READY, "a failed migration does not unserve the tenant"
            column, index, recorded = seen["state"]
            consistent = recorded == (column and index)
            if server_key == "mysql" and (rerun_error is not None or not consistent):
                # DDL commits statement by statement: the rerun may not finish it, but must say why.
                assert rerun_error is not None, f"recorded={recorded} but column={column}, index={index}"
                assert "partly applied" in rerun_stderr, f"the rerun does not say it is half-migrated: {rerun_stderr}"
            else:
                assert consistent, f"recorded={recorded} but column={column}, index={index}"
                assert rerun_error is None, f"rerun failed: {rerun_stderr}"
                assert note_state(tenant) == (True, True, True), "incomplete after the rerun"
        except Exception as exc:  # noqa: BLE001 - every kill point is reported
            problems.append(f"{where}: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
        finally:
            tenant.database.close()
            purge_tenant(tenant.slug)
    assert not problems, "\n".join(problems)


@dataclasses.dataclass
class Line:
    id: int
    memo: str = dataclasses.field(metadata={"max_length": 50, "unique": True})


@pytest.mark.parametrize("server_key", KILLABLE)
def test_batch_create_dropped_at_any_statement_stores_all_rows_or_none(make_tenant_db, server_key):
    from django.db import DatabaseError

    from tenant_schema import register_table

    live_server(server_key)
    tenant_db = make_tenant_db(server_key)
    table = register_table(tenant_db, Line, "lines")
    # Rows with and without a key are inserted by separate statements on every server
    # (PostgreSQL sends each kind as one UNNEST statement, whatever the batch size).
    rows = [{"memo": f"line {i}"} for i in range(10)] + [{"id": 1000 + i, "memo": f"keyed {i}"} for i in range(10)]
    tenant_db.close()

    def stored() -> list[str]:
        memos = sorted(table.model._default_manager.db_manager(tenant_db.alias).values_list("memo", flat=True))
        tenant_db.close()
        return memos

    def empty() -> None:
        table.model._default_manager.db_manager(tenant_db.alias).all().delete()
        tenant_db.close()

    statements, _ = counted(tenant_db.slug, lambda: table.batch_create(rows, batch_size=5))
    assert sum(s.lstrip().startswith("INSERT") for s in statements) >= 2, statements
    for at in range(1, len(statements) + 1):
        empty()
        killer = Killer(tenant_db.slug, at)
        seen: dict[str, Any] = {}

        def look_then_retry():
            seen["stored"] = stored()
            return table.batch_create(rows, batch_size=5)

        with watching(killer):
            first, created = attempt_then_retry(lambda: table.batch_create(rows, batch_size=5), look_then_retry)
        where = f"killed before statement {at} of {len(statements)}"
        assert isinstance(first, DatabaseError), f"{where}: {first!r}"
        assert seen["stored"] == [], f"{where}: some rows were stored"
        assert created == 20
        assert stored() == sorted(r["memo"] for r in rows), where
