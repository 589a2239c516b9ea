"""Settings of the django-tenants side: django-tenants' documented set-up, the same tenant app.

``SHARED_APPS`` live in the public schema (the tenant and domain models
and Django's own apps), ``TENANT_APPS`` in each tenant's schema: only
``benchapp``, the five-model app tenant-schema's side serves too. The
database is the run's own (``BENCH_DT_DATABASE``), dropped with the run.
"""

import os

import benchapp

NAME = os.environ["BENCH_DT_DATABASE"]
CONN_MAX_AGE = int(os.environ.get("BENCH_CONN_MAX_AGE", "0"))
ROUTING_SCHEMA = "routing"  # the routing benchmark's tenant (the database is the run's own)

SECRET_KEY = "bench-only"
DEBUG = False
USE_TZ = True
TIME_ZONE = "UTC"
ALLOWED_HOSTS = ["*"]

SHARED_APPS = [
    "django_tenants",
    "django_tenants_side.dt_shared",
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "django.contrib.sessions",
    "django.contrib.messages",
]
TENANT_APPS = ["benchapp"]
INSTALLED_APPS = SHARED_APPS + [app for app in TENANT_APPS if app not in SHARED_APPS]
TENANT_MODEL = "dt_shared.Client"
TENANT_DOMAIN_MODEL = "dt_shared.Domain"
MIGRATION_MODULES = benchapp.MIGRATION_MODULES
TENANT_MULTIPROCESSING_MAX_PROCESSES = 2  # the machine's cores

# The same stack as tenant-schema's side; the routing benchmark puts
# django-tenants' TenantMainMiddleware first ("at the very top") for the
# routed variant only.
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]
ROOT_URLCONF = "django_tenants_side.urls"

_server = {"HOST": "127.0.0.1", "PORT": "5432", "USER": "postgres", "PASSWORD": "", "NAME": NAME}
DATABASES = {
    "default": {**_server, "ENGINE": "django_tenants.postgresql_backend", "CONN_MAX_AGE": CONN_MAX_AGE},
    # No tenancy at all: Django's own backend, the routing tenant's schema fixed at connect time.
    "plain": {
        **_server,
        "ENGINE": "django.db.backends.postgresql",
        "CONN_MAX_AGE": CONN_MAX_AGE,
        "OPTIONS": {"options": f"-c search_path={ROUTING_SCHEMA}"},
    },
}
DATABASE_ROUTERS = ["django_tenants.routers.TenantSyncRouter"]
