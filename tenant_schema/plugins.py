"""The plugin manager: built-in dialects plus entry points, loaded lazily.

Nothing is imported or loaded at ``import tenant_schema``; the manager is
built on first use. Built-in dialects come from this distribution's own
``tenant_schema`` entry points, so they load exactly as a third party's do;
third-party entry points load too unless autoload is turned off
(``TENANT_SCHEMA["PLUGINS_AUTOLOAD"] = False`` or the environment variable
``TENANT_SCHEMA_DISABLE_PLUGIN_AUTOLOAD=1``), which test suites want.
Modules listed in ``TENANT_SCHEMA["PLUGINS"]`` load in any case; listing one
that is also an entry point (or a built-in dialect) registers it once.

``tenant_schema_register_dialects`` is called while the manager is built;
``register_plugin`` registers a plugin on the built manager, dialects
included, and ``reset_plugins`` forgets the manager (tests).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

import dj_database_url
import pluggy
from django.core.exceptions import ImproperlyConfigured

from . import conf, hookspecs
from .dialects import Dialect
from .exceptions import UnknownDialect
from .hookspecs import PROJECT_NAME, hookimpl
from .lazy import Lazy

ENTRY_POINT_GROUP = PROJECT_NAME
DISTRIBUTION = "tenant-schema"
BUILTIN_MODULES = {
    "postgres": "tenant_schema_postgres",
    "cockroach": "tenant_schema_cockroach",
    "mysql": "tenant_schema_mysql",
    "sqlite": "tenant_schema_sqlite",
}


class DefaultHooks:
    """Fallback implementations: delegate each hook to the Dialect's method.

    Registered before every other plugin, so pluggy calls it last and any
    plugin's non-``None`` answer wins.
    """

    @hookimpl
    def tenant_schema_server_settings(self, dialect: Dialect, url: str) -> dict[str, Any]:
        scheme = url.split(":", 1)[0]
        if scheme not in dj_database_url.ENGINE_SCHEMES:
            # dj-database-url's documented way to teach it a custom backend.
            dj_database_url.register(scheme, dialect.engine)
        parsed = dict(dj_database_url.parse(url, engine=dialect.engine))
        parsed.setdefault("OPTIONS", {})
        return dialect.server_settings(parsed)

    @hookimpl
    def tenant_schema_tenant_settings(self, dialect, server, database_name):
        return dialect.tenant_settings(server, database_name)

    @hookimpl
    def tenant_schema_database_exists(self, dialect, server, name):
        return dialect.database_exists(server, name)

    @hookimpl
    def tenant_schema_create_database(self, dialect, server, name):
        return dialect.create_database(server, name)

    @hookimpl
    def tenant_schema_drop_database(self, dialect, server, name):
        return dialect.drop_database(server, name)

    @hookimpl
    def tenant_schema_clone_database(self, dialect, server, template, name):
        return dialect.clone_database(server, template, name)

    @hookimpl
    def tenant_schema_can_rollback_ddl(self, dialect, connection):
        return dialect.can_rollback_ddl and connection.features.can_rollback_ddl

    @hookimpl
    def tenant_schema_index_sql(self, dialect, schema_editor, model, index):
        return dialect.create_index_sql(schema_editor, model, index)

    @hookimpl
    def tenant_schema_drop_index_sql(self, dialect, schema_editor, model, name, constraint):
        return dialect.drop_index_sql(schema_editor, model, name, constraint)

    @hookimpl
    def tenant_schema_field_for_annotation(self, dialect, annotation, name, metadata):
        return dialect.field_for_annotation(annotation, name, metadata)

    @hookimpl
    def tenant_schema_role_name(self, dialect, server, database_name):
        return dialect.role_name(server, database_name)

    @hookimpl
    def tenant_schema_create_role(self, dialect, server, role, password):
        return dialect.create_role(server, role, password)

    @hookimpl
    def tenant_schema_grant_role(self, dialect, server, role, database_name):
        dialect.grant_role(server, role, database_name)
        return True

    @hookimpl
    def tenant_schema_set_role_password(self, dialect, server, role, password):
        return dialect.set_role_password(server, role, password)

    @hookimpl
    def tenant_schema_drop_role(self, dialect, server, role, database_name):
        return dialect.drop_role(server, role, database_name)


@dataclass
class PluginState:
    """The built manager and what the plugins declared."""

    manager: pluggy.PluginManager
    dialects: dict[str, type[Dialect]] = field(default_factory=dict)
    schemes: dict[str, str] = field(default_factory=dict)
    # plugin name -> (distribution name, version) for ``tenant_dialects``
    distributions: dict[str, tuple[str, str]] = field(default_factory=dict)
    # dialect name -> plugin name that registered it
    dialect_plugins: dict[str, str] = field(default_factory=dict)
    _instances: dict[str, Dialect] = field(default_factory=dict)

    @property
    def hook(self):
        return self.manager.hook

    def dialect(self, name: str) -> Dialect:
        try:
            cls = self.dialects[name]
        except KeyError:
            raise UnknownDialect(
                f"no dialect plugin named {name!r}; installed: {', '.join(sorted(self.dialects))}"
            ) from None
        if name not in self._instances:
            self._instances[name] = cls()
        return self._instances[name]

    def dialect_for_scheme(self, scheme: str) -> Dialect:
        try:
            return self.dialect(self.schemes[scheme])
        except KeyError:
            raise UnknownDialect(
                f"no dialect plugin handles URL scheme {scheme!r}; known schemes: {', '.join(sorted(self.schemes))}"
            ) from None


def get_plugins() -> PluginState:
    """The process-wide plugin state, built on first call."""
    return _state.get()


def get_plugin_manager() -> pluggy.PluginManager:
    return get_plugins().manager


def reset_plugins() -> None:
    """Forget the manager and every plugin registered on it since it was built.

    The next use rebuilds it from the built-in dialects, the entry points
    (when autoload is on) and ``TENANT_SCHEMA["PLUGINS"]``, as read then.
    """
    _state.reset()


def register_plugin(plugin: object, name: str | None = None) -> str:
    """Register ``plugin`` on the live manager, the dialects it declares included; its name.

    ``get_plugin_manager().register(plugin)`` adds hook implementations only:
    ``tenant_schema_register_dialects`` runs while the manager is built, so a
    dialect declared by a plugin registered later would stay unknown. This
    calls the plugin's ``tenant_schema_register_dialects`` too. A dialect
    name or URL scheme already taken raises ``ImproperlyConfigured`` and
    leaves the plugin unregistered. ``reset_plugins()`` forgets it again.
    """
    state = get_plugins()
    pm = state.manager
    registered = pm.register(plugin, name=name)
    if registered is None:
        raise ImproperlyConfigured(f"plugin {name or plugin!r} is blocked on the tenant_schema plugin manager")
    registered_name = pm.get_name(plugin)
    before = (dict(state.dialects), dict(state.schemes), dict(state.dialect_plugins))
    try:
        for impl in pm.hook.tenant_schema_register_dialects.get_hookimpls():
            if impl.plugin is plugin:
                _declare_dialects(state, impl)
    except BaseException:
        pm.unregister(plugin)
        state.dialects, state.schemes, state.dialect_plugins = before
        raise
    state.distributions.setdefault(registered_name, ("(registered)", ""))
    return registered_name


def _dist_name(dist: Any) -> str:
    return (dist.metadata["Name"] or "").lower().replace("_", "-") if dist is not None else ""


def _build() -> PluginState:
    pm = pluggy.PluginManager(PROJECT_NAME)
    pm.add_hookspecs(hookspecs)
    pm.register(DefaultHooks(), name="tenant_schema.defaults")
    state = PluginState(manager=pm)

    eps = metadata.entry_points(group=ENTRY_POINT_GROUP)
    own = [ep for ep in eps if _dist_name(ep.dist) == DISTRIBUTION]
    for ep in own:
        if pm.get_plugin(ep.name) is None:
            pm.register(ep.load(), name=ep.name)
            state.distributions[ep.name] = (DISTRIBUTION, ep.dist.version)
    # Running from a source tree that was never installed: same modules, by import.
    for name, module in BUILTIN_MODULES.items():
        if pm.get_plugin(name) is None:
            pm.register(importlib.import_module(module), name=name)
            state.distributions[name] = (DISTRIBUTION, "source")
    if conf.plugins_autoload():
        pm.load_setuptools_entrypoints(ENTRY_POINT_GROUP)
        for plugin, dist in pm.list_plugin_distinfo():
            name = pm.get_name(plugin)
            if name not in state.distributions:
                state.distributions[name] = (dist.project_name, dist.version)
    for dotted in conf.get("PLUGINS"):
        if pm.get_plugin(dotted) is not None:
            continue
        try:
            module = importlib.import_module(dotted)
        except ImportError as exc:
            raise ImproperlyConfigured(
                f'TENANT_SCHEMA["PLUGINS"] lists {dotted!r}, which does not import: {exc}'
            ) from exc
        if pm.is_registered(module):
            # Loaded already, as a built-in dialect or through its entry point:
            # listing it too (so it loads with autoload off) is not an error.
            continue
        pm.register(module, name=dotted)
        state.distributions[dotted] = ("(settings)", "")

    # Call each implementation on its own, so we know which plugin declared what.
    for impl in pm.hook.tenant_schema_register_dialects.get_hookimpls():
        _declare_dialects(state, impl)
    return state


def _declare_dialects(state: PluginState, impl: Any) -> None:
    """Run one ``tenant_schema_register_dialects`` implementation, noting its plugin."""
    impl.function(register=lambda cls, _name=impl.plugin_name: _register_dialect(state, cls, _name))


_state: Lazy[PluginState] = Lazy(_build)


def _register_dialect(state: PluginState, cls: type[Dialect], plugin_name: str) -> None:
    if not (isinstance(cls, type) and issubclass(cls, Dialect)):
        raise ImproperlyConfigured(f"plugin {plugin_name!r} registered {cls!r}, which is not a Dialect subclass")
    if not cls.name or not cls.engine or not cls.schemes:
        raise ImproperlyConfigured(f"dialect {cls.__name__} from {plugin_name!r} must set name, engine and schemes")
    if cls.name in state.dialects and state.dialects[cls.name] is not cls:
        raise ImproperlyConfigured(
            f"dialect {cls.name!r} from {plugin_name!r} is already registered by {state.dialect_plugins[cls.name]!r}"
        )
    for scheme in cls.schemes:
        owner = state.schemes.get(scheme)
        if owner is not None and owner != cls.name:
            raise ImproperlyConfigured(
                f"URL scheme {scheme!r} of dialect {cls.name!r} is already taken by dialect {owner!r}"
            )
        state.schemes[scheme] = cls.name
    state.dialects[cls.name] = cls
    state.dialect_plugins[cls.name] = plugin_name
