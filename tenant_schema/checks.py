"""System checks (``manage.py check``) for a tenant-schema set-up.

Each message says what is wrong and how to fix it; ids are
``tenant_schema.E0xx`` (errors) and ``tenant_schema.W0xx`` (warnings).
"""

from __future__ import annotations

from django.apps import apps
from django.conf import settings
from django.core.checks import Error, Warning, register
from django.core.exceptions import ImproperlyConfigured
from django.utils.module_loading import import_string

from . import conf
from .exceptions import UnknownDialect

ROUTER = "tenant_schema.routers.TenantRouter"
MIDDLEWARE = "tenant_schema.middleware.TenantMiddleware"


@register("tenant_schema")
def check_servers(app_configs=None, **kwargs):
    from .servers import mask_secrets, parse_server

    servers = conf.get("SERVERS")
    if not isinstance(servers, dict) or not servers:
        return [
            Error(
                'TENANT_SCHEMA["SERVERS"] must be a non-empty dict of key -> URL',
                hint='e.g. {"default": "postgres://app@db:5432/"}',
                id="tenant_schema.E001",
            )
        ]
    errors = []
    for key, url in servers.items():
        # parse_server's messages name the server and never show a password;
        # mask again anyway: a check must not print one whatever raised.
        try:
            parse_server(key, url)
        except UnknownDialect as exc:
            errors.append(
                Error(
                    _server_message(key, mask_secrets(str(exc), url)),
                    hint=_unknown_scheme_hint(),
                    id="tenant_schema.E002",
                )
            )
        except Exception as exc:  # noqa: BLE001 - a plugin's parse error is reported, not a crash
            errors.append(
                Error(
                    _server_message(key, mask_secrets(str(exc), url)),
                    hint="use a URL like postgres://user@host:5432/, mysql://user@host/ "
                    "or sqlite:///path/to/dir/ (percent-encode special characters "
                    "in the user name and password)",
                    id="tenant_schema.E003",
                )
            )
    default = conf.get("DEFAULT_SERVER")
    if default not in servers:
        errors.append(
            Error(
                f'TENANT_SCHEMA["DEFAULT_SERVER"] is {default!r}, which is not a key of SERVERS',
                hint=f"use one of: {', '.join(sorted(map(str, servers)))}",
                id="tenant_schema.E004",
            )
        )
    return errors


def _unknown_scheme_hint() -> str:
    """E002's hint: whether installing the plugin is enough depends on autoloading."""
    if conf.plugins_autoload():
        return (
            "fix the URL's scheme, or install the dialect plugin for it (plugins are autoloaded "
            'from the tenant_schema entry points) or list its module in TENANT_SCHEMA["PLUGINS"]'
        )
    return (
        "fix the URL's scheme, or list the dialect plugin's module in TENANT_SCHEMA[\"PLUGINS\"]: "
        'installed plugins are not autoloaded here (TENANT_SCHEMA["PLUGINS_AUTOLOAD"] is false or '
        f"{conf.AUTOLOAD_ENV} is set)"
    )


def _server_message(key: object, message: str) -> str:
    prefix = f"tenant server {key!r}:"
    return message if message.startswith(prefix) else f"{prefix} {message}"


def _app_config(entry: str):
    return next((c for c in apps.get_app_configs() if entry in (c.name, c.label)), None)


def _unmigrated_apps() -> tuple[str, ...]:
    from django.core.exceptions import ImproperlyConfigured

    from .migration_plan import migration_plan

    try:
        return migration_plan().unmigrated
    except ImproperlyConfigured:  # a TENANT_APPS entry that is not installed: E005 says so
        return ()


@register("tenant_schema")
def check_apps(app_configs=None, **kwargs):
    errors = []
    tenant_apps = list(conf.get("TENANT_APPS"))
    shared = {(_app_config(e) or e) for e in conf.get("SHARED_APPS")}
    for entry in tenant_apps:
        config = _app_config(entry)
        if config is None:
            errors.append(
                Error(
                    f'TENANT_SCHEMA["TENANT_APPS"] lists {entry!r}, which is not installed',
                    hint="add it to INSTALLED_APPS or remove it from TENANT_APPS",
                    id="tenant_schema.E005",
                )
            )
            continue
        if config in shared or entry in shared:
            errors.append(
                Error(
                    f"app {config.label!r} is listed both in TENANT_APPS and in SHARED_APPS",
                    hint="an app's tables live either in each tenant's database or in default: keep it in one list",
                    id="tenant_schema.E006",
                )
            )
        if config.label in _unmigrated_apps():
            errors.append(
                Error(
                    f"tenant app {config.label!r} has no migrations: tenant databases would get no tables for it",
                    hint=f"run manage.py makemigrations {config.label}",
                    id="tenant_schema.E012",
                )
            )
        if config.label in ("tenant_schema", "contenttypes", "auth"):
            errors.append(
                Error(
                    f"app {config.label!r} cannot be a tenant app: it must stay in the default database",
                    hint="remove it from TENANT_APPS",
                    id="tenant_schema.E007",
                )
            )
    if tenant_apps:
        if ROUTER not in [
            r if isinstance(r, str) else f"{type(r).__module__}.{type(r).__name__}" for r in settings.DATABASE_ROUTERS
        ]:
            errors.append(
                Error(
                    "TENANT_APPS is set but TenantRouter is not in DATABASE_ROUTERS: tenant "
                    "models would be read from and written to the default database",
                    hint=f'add "{ROUTER}" to DATABASE_ROUTERS',
                    id="tenant_schema.E008",
                )
            )
        if MIDDLEWARE not in settings.MIDDLEWARE:
            errors.append(
                Warning(
                    "TenantMiddleware is not in MIDDLEWARE: requests have no current tenant",
                    hint=f'add "{MIDDLEWARE}" to MIDDLEWARE (or select tenants with '
                    "tenant_context yourself and silence tenant_schema.W001)",
                    id="tenant_schema.W001",
                )
            )
    return errors


@register("tenant_schema")
def check_settings(app_configs=None, **kwargs):
    errors = []
    cap = conf.get("MAX_OPEN_CONNECTIONS")
    if not isinstance(cap, int) or isinstance(cap, bool) or cap < 1:
        errors.append(
            Error(
                f'TENANT_SCHEMA["MAX_OPEN_CONNECTIONS"] must be a positive integer, not {cap!r}',
                id="tenant_schema.E009",
            )
        )
    prefix = conf.get("DATABASE_PREFIX")
    if not isinstance(prefix, str) or not prefix:
        errors.append(
            Error(
                f'TENANT_SCHEMA["DATABASE_PREFIX"] is {prefix!r}: it must be a non-empty string',
                hint='Use a prefix only tenant databases start with, such as "tenant_": without one '
                "a tenant's database name could be any database on the server.",
                id="tenant_schema.E020",
            )
        )
    resolver = conf.get("RESOLVER")
    if resolver not in ("subdomain", "header", "path"):
        try:
            found = import_string(resolver)
        except ImportError as exc:
            found, problem = None, str(exc)
        else:
            problem = "it is not callable"
        if not callable(found):
            errors.append(
                Error(
                    f'TENANT_SCHEMA["RESOLVER"] is {resolver!r}: {problem}',
                    hint='use "subdomain", "header", "path" or the dotted path of a function '
                    "taking the request and returning a slug or None",
                    id="tenant_schema.E010",
                )
            )
    errors += _check_exclusions()
    try:
        from .placement import get_policy

        get_policy()
    except ImproperlyConfigured as exc:
        errors.append(
            Error(
                str(exc),
                hint='use None, "fewest", "weighted" or the dotted path of a function '
                "policy(candidates, *, counts, labels) returning one of the candidate servers",
                id="tenant_schema.E013",
            )
        )
    for spec in conf.get("TENANT_TABLES"):
        parts = (spec,) if isinstance(spec, str) else tuple(spec)
        try:
            import_string(parts[0])
        except (ImportError, IndexError, TypeError) as exc:
            errors.append(
                Error(
                    f'TENANT_SCHEMA["TENANT_TABLES"] entry {spec!r} does not import: {exc}',
                    hint='entries are ("package.module.Dataclass", "table", "pk")',
                    id="tenant_schema.E011",
                )
            )
    return errors


def _is_string_list(value: object) -> bool:
    return isinstance(value, (list, tuple)) and all(isinstance(x, str) for x in value)


def _check_exclusions() -> list:
    """``PUBLIC_PATHS`` and ``EXCLUDED_SUBDOMAINS``: lists of what a resolver must not read as a slug."""
    errors = []
    paths = conf.get("PUBLIC_PATHS")
    if not _is_string_list(paths):
        errors.append(
            Error(
                f'TENANT_SCHEMA["PUBLIC_PATHS"] must be a list of paths starting with "/", not {paths!r}',
                hint='e.g. ["/admin/", "/static/", "/media/"]',
                id="tenant_schema.E013",
            )
        )
    else:
        for path in paths:
            if not path.startswith("/"):
                errors.append(
                    Error(
                        f'TENANT_SCHEMA["PUBLIC_PATHS"] entry {path!r} does not start with "/"',
                        hint=f'write it as "/{path.lstrip("/")}"',
                        id="tenant_schema.E013",
                    )
                )
    labels = conf.get("EXCLUDED_SUBDOMAINS")
    if not _is_string_list(labels):
        errors.append(
            Error(
                f'TENANT_SCHEMA["EXCLUDED_SUBDOMAINS"] must be a list of host labels, not {labels!r}',
                hint='e.g. ["www"]',
                id="tenant_schema.E014",
            )
        )
    else:
        for label in labels:
            if not label or "." in label or ":" in label or "/" in label:
                first = label.split(".")[0] or "www"
                errors.append(
                    Error(
                        f'TENANT_SCHEMA["EXCLUDED_SUBDOMAINS"] entry {label!r} is not a single host label',
                        hint=f"list the first label of the host only, e.g. {first!r}",
                        id="tenant_schema.E014",
                    )
                )
    return errors
