"""Settings of the example site: a personal-finance app, one database per tenant.

The registry (tenants, users, sessions) is an SQLite file; tenants live on
the server named by ``TENANT_SCHEMA_DEMO_SERVER`` (default: SQLite files
next to it). Try ``postgres://postgres@127.0.0.1:5432/`` or
``mysql://root@127.0.0.1:3306/``.
"""

import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
# Where the registry and the SQLite tenant files go (tests point it elsewhere).
VAR_DIR = Path(os.environ.get("TENANT_SCHEMA_DEMO_DIR") or BASE_DIR / "var")
VAR_DIR.mkdir(parents=True, exist_ok=True)  # so any manage.py command works from a fresh checkout

SECRET_KEY = "demo-only-not-secret"
DEBUG = os.environ.get("TENANT_SCHEMA_DEMO_DEBUG", "1") == "1"
# Tenants are subdomains: acme.localhost:8000, globex.localhost:8000.
ALLOWED_HOSTS = [".localhost", "localhost", "127.0.0.1"]
USE_TZ = True
TIME_ZONE = "UTC"

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "tenant_schema",
    "finance",
]

MIDDLEWARE = [
    # Resolves the tenant from the subdomain and sets it for the request; first,
    # so everything after it (sessions, caches) runs inside the tenant.
    "tenant_schema.middleware.TenantMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]

ROOT_URLCONF = "finance_site.urls"
WSGI_APPLICATION = "finance_site.wsgi.application"
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
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": str(VAR_DIR / "registry.sqlite3")}}
# Models of TENANT_APPS go to the current tenant's database; the rest to default.
DATABASE_ROUTERS = ["tenant_schema.routers.TenantRouter"]

TENANT_SCHEMA = {
    "SERVERS": {"default": os.environ.get("TENANT_SCHEMA_DEMO_SERVER") or f"sqlite:///{VAR_DIR / 'tenants'}/"},
    "DATABASE_PREFIX": os.environ.get("TENANT_SCHEMA_DEMO_PREFIX", "demo_"),
    "TENANT_APPS": ["finance"],
    "RESOLVER": "subdomain",
}

# Every cache key carries the current tenant: acme's cached total is never globex's.
CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.locmem.LocMemCache",
        "KEY_FUNCTION": "tenant_schema.cache.make_key",
    }
}
# A Celery worker forgets a tenant's cached total after recalculating: web and worker processes
# must then share the cache, so a Redis broker doubles as the cache unless one is named.
_shared_cache = os.environ.get("TENANT_SCHEMA_DEMO_REDIS") or (
    os.environ.get("CELERY_BROKER_URL", "") if os.environ.get("CELERY_BROKER_URL", "").startswith("redis") else ""
)
if _shared_cache:  # e.g. redis://127.0.0.1:6379/1
    CACHES["default"].update(BACKEND="django.core.cache.backends.redis.RedisCache", LOCATION=_shared_cache)

# Uploaded receipts: each tenant's files under MEDIA_ROOT/<tenant prefix>/, served from MEDIA_URL/<prefix>/.
MEDIA_ROOT = VAR_DIR / "media"
MEDIA_URL = "/media/"
STORAGES = {
    "default": {"BACKEND": "tenant_schema.storage.TenantFileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}

# Celery (finance_site/celery.py): a task sent inside a tenant runs inside it on the
# worker. Without a broker the demo runs the task in-process and says so.
CELERY_BROKER_URL = os.environ.get("CELERY_BROKER_URL", "")
CELERY_TASK_DEFAULT_QUEUE = os.environ.get("CELERY_TASK_DEFAULT_QUEUE", "celery")
CELERY_TASK_IGNORE_RESULT = True

# The current tenant on every log line.
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"tenant": {"()": "tenant_schema.logging.TenantContextFilter"}},
    "formatters": {"tenant": {"format": "%(levelname)s [%(tenant)s] %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "filters": ["tenant"], "formatter": "tenant"}},
    "loggers": {"finance": {"handlers": ["console"], "level": "INFO"}},
}
