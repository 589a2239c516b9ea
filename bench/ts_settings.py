"""Settings of the tenant-schema side of the benchmark (``ts_worker.py``).

The tenant app is ``benchapp`` (five models), the same app the
django-tenants side serves. The registry is a SQLite file in the run's
directory, as in the test suite. Every database and schema name starts
with the run id (``DATABASE_PREFIX``), so the run's clean-up drops exactly
what the run created.
"""

import os
from pathlib import Path

import benchapp

RUN_ID = os.environ["BENCH_RUN_ID"]
RUN_DIR = Path(os.environ["BENCH_RUN_DIR"])
PG = os.environ.get("BENCH_PG_URL", "postgres://postgres@127.0.0.1:5432/")
MYSQL = os.environ.get("BENCH_MYSQL_URL", "mysql://root@127.0.0.1:3306/")
TENANT_DIR = RUN_DIR / "tenants"
TENANT_DIR.mkdir(parents=True, exist_ok=True)

SECRET_KEY = "bench-only"
DEBUG = False
USE_TZ = True
TIME_ZONE = "UTC"
ALLOWED_HOSTS = ["*"]

INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "django.contrib.sessions",
    "django.contrib.messages",
    "tenant_schema",
    "benchapp",
]
# Django's project template, as on the django-tenants side; the routing
# benchmark adds TenantMiddleware for the routed variant only.
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]
ROOT_URLCONF = "ts_urls"
MIGRATION_MODULES = benchapp.MIGRATION_MODULES

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": str(RUN_DIR / "registry.sqlite3"),
        "OPTIONS": {"timeout": 60, "transaction_mode": "IMMEDIATE"},
    }
}
DATABASE_ROUTERS = ["tenant_schema.routers.TenantRouter"]

# Routing keeps connections open between requests on both sides
# (conn_max_age here, CONN_MAX_AGE on the django-tenants side).
KEEP = "conn_max_age=600"
SERVERS = {
    "sqlite": f"sqlite:///{TENANT_DIR}/",
    "pg": PG,
    "pgschema": f"{PG}{RUN_ID}_shared?isolation=schema",
    "mysql": MYSQL,
    "sqlite_keep": f"sqlite:///{TENANT_DIR}/?{KEEP}",
    "pg_keep": f"{PG}?{KEEP}",
    "pgschema_keep": f"{PG}{RUN_ID}_shared?isolation=schema&{KEEP}",
}

TENANT_SCHEMA = {
    "SERVERS": SERVERS,
    "DEFAULT_SERVER": "sqlite",
    "DATABASE_PREFIX": f"{RUN_ID}_",
    "PLUGINS_AUTOLOAD": False,
    "TENANT_APPS": ["benchapp"],
    # PostgreSQL here allows 100 connections for everyone: touching 500
    # tenants keeps at most this many open (least recently used closed).
    "MAX_OPEN_CONNECTIONS": int(os.environ.get("BENCH_MAX_OPEN_CONNECTIONS", "20")),
    "RESOLVER": "subdomain",
}
