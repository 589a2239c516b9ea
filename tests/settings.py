"""Settings for tenant-schema's own test suite."""

import os
import tempfile
import urllib.parse
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
SECRET_KEY = "tests-only"
DEBUG = False
USE_TZ = True
TIME_ZONE = "UTC"
ALLOWED_HOSTS = ["*"]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "tenant_schema",
    "tests.tenantapp",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "tenant_schema.middleware.TenantMiddleware",
]

ROOT_URLCONF = "tests.urls"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]
STATIC_URL = "/static/"

# The registry lives in SQLite; tenants live on every live server below.
# The test registry is a file (not pytest-django's in-memory default) so that
# worker processes (two registrants at once, migrate_tenants(jobs=2)) see it.
# IMMEDIATE transactions take SQLite's write lock up front: concurrent
# registrants queue on it instead of failing with "database is locked".
(BASE_DIR / "var").mkdir(exist_ok=True)  # a fresh clone has no var/ (it is git-ignored)
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": str(BASE_DIR / "var" / "registry.sqlite3"),
        "OPTIONS": {"timeout": 60, "transaction_mode": "IMMEDIATE"},
        "TEST": {"NAME": str(BASE_DIR / "var" / f"test_registry_{os.getpid()}.sqlite3")},
    }
}
if os.environ.get("TENANT_SCHEMA_REGISTRY_URL"):  # run the suite with the registry on another server
    import dj_database_url

    DATABASES["default"] = dj_database_url.parse(os.environ["TENANT_SCHEMA_REGISTRY_URL"])
DATABASE_ROUTERS = ["tenant_schema.routers.TenantRouter"]

TENANT_DIR = Path(os.environ.get("TENANT_SCHEMA_TEST_DIR") or tempfile.mkdtemp(prefix="tenant-schema-tests-"))
os.environ["TENANT_SCHEMA_TEST_DIR"] = str(TENANT_DIR)  # child processes share the directory
SERVERS = {
    "default": f"sqlite:///{TENANT_DIR}/",
    "sqlite": f"sqlite:///{TENANT_DIR}/",
    "pg": os.environ.get("TENANT_SCHEMA_PG_URL", "postgres://postgres@127.0.0.1:5432/"),
    "pgschema": os.environ.get("TENANT_SCHEMA_PG_URL", "postgres://postgres@127.0.0.1:5432/")
    + "tstest_shared?isolation=schema",
    "mysql": os.environ.get("TENANT_SCHEMA_MYSQL_URL", "mysql://root@127.0.0.1:3306/"),
    # Each tenant connects as its own role (tests/test_credentials.py); not in conftest's LIVE_SERVERS.
    "pgroles": os.environ.get("TENANT_SCHEMA_PG_URL", "postgres://postgres@127.0.0.1:5432/") + "?tenant_roles=true",
    "pgschemaroles": os.environ.get("TENANT_SCHEMA_PG_URL", "postgres://postgres@127.0.0.1:5432/")
    + "tstest_shared_roles?isolation=schema&tenant_roles=true",
    "mysqlroles": os.environ.get("TENANT_SCHEMA_MYSQL_URL", "mysql://root@127.0.0.1:3306/") + "?tenant_roles=true",
}
if os.environ.get("TENANT_SCHEMA_PG2_URL"):  # ./run test starts a second PostgreSQL cluster (tests/test_move.py)
    SERVERS["pg2"] = os.environ["TENANT_SCHEMA_PG2_URL"]
if os.environ.get("TENANT_SCHEMA_COCKROACH_URL"):
    SERVERS["crdb"] = os.environ["TENANT_SCHEMA_COCKROACH_URL"]
if os.environ.get("TENANT_SCHEMA_PGBOUNCER_URL"):  # ./run test starts PgBouncer (tests/test_pgbouncer.py)
    # Each run has its own PgBouncer port, and its schema tenants their own shared database.
    _bouncer = os.environ["TENANT_SCHEMA_PGBOUNCER_URL"]
    _shared = f"tstest_bouncer_{urllib.parse.urlsplit(_bouncer).port}"
    SERVERS["pgbouncer"] = _bouncer + "?pooler=transaction"
    SERVERS["pgbouncerschema"] = _bouncer + f"{_shared}?isolation=schema&pooler=transaction"

TENANT_SCHEMA = {
    "SERVERS": SERVERS,
    "DEFAULT_SERVER": "default",
    "DATABASE_PREFIX": "tstest_",
    "PLUGINS_AUTOLOAD": False,
    "TENANT_APPS": ["tests.tenantapp"],
    "TENANT_TABLES": [("tests.tenantapp.tables.AuditEvent", "audit_event", "id")],
}
