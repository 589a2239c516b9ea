"""Every use of Django's private API, in one place.

tenant-schema builds on Django's schema editor, query compiler and
connection handler. Where Django offers no public way to do something, the
private call is wrapped here and nowhere else, so a Django upgrade has one
module to look at. Tested on Django 5.2 LTS (``pyproject.toml`` pins
``Django>=5.2,<6.0``); each wrapper names the private API it uses.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.db import connections, router
from django.db.models import sql

# -- connections -------------------------------------------------------------------


def has_connection(alias: str) -> bool:
    """Whether this thread (or async context) has built a connection object for ``alias``.

    ``ConnectionHandler._connections`` (an ``asgiref.local.Local``).
    """
    return hasattr(connections._connections, alias)


def on_connection_object(hook: Callable[[Any], None]) -> None:
    """Call ``hook(wrapper)`` on every connection object Django builds for an alias.

    ``ConnectionHandler.__getitem__`` builds a thread's (or async context's)
    wrapper with ``self.create_connection(alias)`` the first time the alias
    is used there; that method is replaced on the ``connections`` instance
    (the class is left alone). Installing again replaces the hook.
    """
    connections._tenant_schema_hook = hook
    if "create_connection" in vars(connections):
        return

    def create_connection(alias: str):
        wrapper = type(connections).create_connection(connections, alias)
        connections._tenant_schema_hook(wrapper)
        return wrapper

    connections.create_connection = create_connection


def gate_connect(
    wrapper,
    *,
    before_connect: Callable[[Any], None],
    after_connect: Callable[[Any], None],
    after_close: Callable[[Any], None],
) -> None:
    """Run callbacks around one wrapper's physical connects and closes.

    Django has no pre-connect signal. ``BaseDatabaseWrapper.connect`` calls
    ``self.get_new_connection(params)`` (the physical connect) after its
    async-safety and settings checks, and ``close`` ends the connection;
    both are looked up on the instance, so they are replaced there:
    ``before_connect`` runs right before the physical connect (raising
    leaves the wrapper unconnected), ``after_connect`` once ``connect``
    returned or failed, ``after_close`` after every ``close``.
    """
    cls = type(wrapper)
    physical_connect = wrapper.get_new_connection  # borrow_connections' one, if installed first

    def get_new_connection(conn_params):
        before_connect(wrapper)
        return physical_connect(conn_params)

    def connect():
        try:
            cls.connect(wrapper)
        finally:
            after_connect(wrapper)

    def close():
        try:
            cls.close(wrapper)
        finally:
            after_close(wrapper)

    wrapper.get_new_connection = get_new_connection
    wrapper.connect = connect
    wrapper.close = close


def borrow_connections(
    wrapper,
    *,
    borrow: Callable[[Any, Callable[[], Any], dict[str, Any]], Any],
    give_back: Callable[[Any, Any], None],
) -> None:
    """Make one wrapper borrow its physical connections instead of opening and ending them.

    ``BaseDatabaseWrapper.connect`` gets the physical connection from
    ``self.get_new_connection(conn_params)``; it becomes
    ``borrow(wrapper, connect, conn_params)``, where ``connect()`` is Django's
    own physical connect. ``close`` ends it with ``self._close()`` (private);
    that becomes ``give_back(wrapper, connection)``, after the wrapper has
    dropped its reference, as Django's own pool does (``OPTIONS["pool"]``,
    Django 5.1+: ``_close`` sets ``self.connection = None``): a wrapper
    closed inside an atomic block then refuses to reconnect instead of
    using a connection lent to someone else. Both are replaced on the
    instance; install this before ``gate_connect``.
    """
    cls = type(wrapper)

    def get_new_connection(conn_params):
        return borrow(wrapper, lambda: cls.get_new_connection(wrapper, conn_params), conn_params)

    def _close():
        connection = wrapper.connection
        if connection is None:
            return
        wrapper.connection = None
        with wrapper.wrap_database_errors:
            give_back(wrapper, connection)

    wrapper.get_new_connection = get_new_connection
    wrapper._close = _close


# -- backends, read without a connection ------------------------------------------


@functools.cache
def backend_wrapper_class(engine: str) -> type | None:
    """The ``DatabaseWrapper`` class of the Django backend ``engine``, or ``None`` when it cannot be loaded.

    ``django.db.utils.load_backend`` (undocumented) imports ``<engine>.base``,
    and with it the driver: a backend whose driver is not installed gives
    ``None``. Nothing connects.
    """
    from django.db.utils import load_backend

    if not engine:
        return None
    try:
        return load_backend(engine).DatabaseWrapper
    except (ImportError, ImproperlyConfigured):
        return None


def backend_max_name_length(engine: str) -> int | None:
    """``connection.ops.max_name_length()`` of the backend ``engine``, without a connection.

    The backend's ``DatabaseWrapper.ops_class`` is made with no connection
    (``BaseDatabaseOperations.__init__`` only stores it) and asked:
    Django's backends return a constant without looking at the connection
    (PostgreSQL 63, MySQL and MariaDB 64, Oracle 30, SQLite ``None``: no
    limit), as does django-cockroachdb 5.2 (PostgreSQL's 63). ``None`` too
    when the backend cannot be loaded, or needs its connection to answer.
    """
    wrapper = backend_wrapper_class(engine)
    if wrapper is None:
        return None
    try:
        return wrapper.ops_class(None).max_name_length()
    except AttributeError:  # it reads its connection
        return None


def backend_feature(engine: str, name: str, default: Any) -> Any:
    """``connection.features.<name>`` of the Django backend ``engine`` where it is a class attribute.

    Read from ``DatabaseWrapper.features_class`` without a connection (the
    flags Django derives from the server version are properties there, and
    give ``default``), or ``default`` when the backend cannot be loaded.
    """
    wrapper = backend_wrapper_class(engine)
    value = getattr(getattr(wrapper, "features_class", None), name, default)
    return value if isinstance(value, bool | int | str) else default


def postgresql_repeatable_read() -> tuple[Any, str]:
    """The driver's REPEATABLE READ isolation level, and its connections' read-only attribute name.

    ``django.db.backends.postgresql.psycopg_any`` (undocumented): psycopg 3's
    ``IsolationLevel.REPEATABLE_READ`` and ``read_only``, or psycopg 2's and
    ``readonly``.
    """
    from django.db.backends.postgresql.psycopg_any import IsolationLevel, is_psycopg3

    return IsolationLevel.REPEATABLE_READ, "read_only" if is_psycopg3 else "readonly"


def postgresql_cursor_class() -> type:
    """The cursor class Django's PostgreSQL backend gives psycopg 3 (``django.db.backends.postgresql.base.Cursor``).

    Client-side binding, Django's default; subclassed by the PostgreSQL
    adapter's search-path cursors. ``ImproperlyConfigured`` under psycopg 2
    (``psycopg_any.is_psycopg3``), which has no ``cursor_factory`` of this kind.
    """
    from django.db.backends.postgresql.psycopg_any import is_psycopg3

    if not is_psycopg3:
        raise ImproperlyConfigured("isolation=schema behind a pooler needs psycopg 3 (psycopg>=3.1)")
    from django.db.backends.postgresql.base import Cursor

    return Cursor


# -- schema editor -----------------------------------------------------------------


def create_index_statement(editor, model, *, fields, name: str, sql_template: str | None, col_suffixes):
    """``BaseDatabaseSchemaEditor._create_index_sql``: a quoted ``CREATE [UNIQUE] INDEX`` Statement."""
    return editor._create_index_sql(model, fields=fields, name=name, sql=sql_template, col_suffixes=col_suffixes)


def drop_index_statement(editor, model, name: str, *, unique_constraint: bool = False):
    """``_delete_constraint_sql`` (a unique constraint) or ``_delete_index_sql`` (an index)."""
    if unique_constraint:
        return editor._delete_constraint_sql(editor.sql_delete_unique, model, name)
    return editor._delete_index_sql(model, name)


def model_index_statements(editor, model) -> list:
    """``_model_indexes_sql``: the indexes Django would create with ``model``'s table."""
    return list(editor._model_indexes_sql(model))


def foreign_key_statement(editor, model, field, suffix: str):
    """``_create_fk_sql``: ``ALTER TABLE ... ADD CONSTRAINT ... FOREIGN KEY`` for ``field``."""
    return editor._create_fk_sql(model, field, suffix)


def drop_foreign_key_statement(editor, model, name: str):
    """``_delete_fk_sql``: drop the foreign-key constraint ``name``."""
    return editor._delete_fk_sql(model, name)


# -- fields ------------------------------------------------------------------------


def set_unique(field) -> None:
    """Make an unbound field unique (``Field._unique``, what ``unique=True`` sets in ``__init__``)."""
    field._unique = True


# -- dynamic models ----------------------------------------------------------------


def isolated_apps(*labels: str):
    """An app registry of its own (``django.apps.registry.Apps``) with a stub app for each label.

    What Django's migration state renders models into: ``Apps`` with
    ``django.db.migrations.state.AppConfigStub`` configs (both undocumented).
    A model joins it with ``Meta.apps`` (an option Django's migrations use,
    not in Django's documentation); ``get_models()`` then sees it and Django
    finds reverse relations (delete cascades) between its models.
    """
    from django.apps.registry import Apps
    from django.db.migrations.state import AppConfigStub

    return Apps([AppConfigStub(label) for label in labels])


def registered_model(apps, app_label: str, model_name: str):
    """The model ``app_label.model_name`` of registry ``apps``, or ``None``, even before it is ready.

    ``Apps.all_models`` (the models registered so far, by app label and lower-case model name).
    """
    return apps.all_models[app_label].get(model_name.lower())


def order_fields(fields) -> None:
    """Number unbound fields so a model class gets them in this order, whenever each was made.

    A model orders its fields by ``Field.creation_counter``, the class-wide
    count ``Field.__init__`` increments.
    """
    from django.db import models

    for field in fields:
        field.creation_counter = models.Field.creation_counter
        models.Field.creation_counter += 1


# -- queries -----------------------------------------------------------------------


def compile_insert(model, connection, fields, rows: int, sample, conflict: dict[str, Any]) -> list[tuple[str, Any]]:
    """``sql.InsertQuery`` compiled for ``rows`` rows shaped like ``sample`` (``returning_fields`` set)."""
    query = sql.InsertQuery(
        model,
        on_conflict=conflict.get("on_conflict"),
        update_fields=conflict.get("update_fields", ()),
        unique_fields=conflict.get("unique_fields", ()),
    )
    query.insert_values(fields, [sample] * rows)
    compiler = query.get_compiler(connection=connection)
    compiler.returning_fields = conflict.get("returning")
    return compiler.as_sql()


def raw_insert(model, objs, fields, using: str) -> None:
    """``QuerySet._insert(objs, fields, raw=True)``: one INSERT storing each field's attribute as it is.

    What ``Model.save_base(raw=True)`` (``loaddata``) does for one row: no
    ``pre_save`` (``auto_now``) replaces a value, while fields with their
    own SQL placeholder keep it. The caller keeps ``objs`` under the
    backend's batch size.
    """
    model._base_manager.db_manager(using)._insert(objs, fields=fields, raw=True, using=using)


def compile_update(queryset, connection, values: dict[str, Any]) -> tuple[str, list]:
    """``sql.UpdateQuery`` chained from ``queryset``, compiled: ``UPDATE ... SET values WHERE ...``."""
    query = queryset.query.chain(sql.UpdateQuery)
    query.add_update_values(values)
    query.clear_ordering(force=True)
    return query.get_compiler(connection=connection).as_sql()


def queryset_db_for_write(queryset) -> str:
    """The alias a queryset writes to: ``QuerySet._db``, else the router with ``QuerySet._hints``."""
    return queryset._db or router.db_for_write(queryset.model, **queryset._hints)


def queryset_db_for_read(queryset) -> str:
    """The alias a queryset reads from: ``QuerySet._db``, else the router with ``QuerySet._hints``."""
    return queryset._db or router.db_for_read(queryset.model, **queryset._hints)


def manager_db_for_write(manager) -> str:
    """The alias a related manager writes to: ``Manager._db``, else the router with its instance."""
    return manager._db or router.db_for_write(manager.model, instance=manager.instance)


def queryset_alias(queryset) -> str | None:
    """The alias ``using()`` pinned a queryset to, or ``None`` when the router picks it (``QuerySet._db``)."""
    return queryset._db


# -- watching the ORM's object paths (object_isolation) ----------------------------
# Tested on Django 5.2. Each function replaces a Django internal in place,
# once per process (the caller installs each once); the hooks it calls are
# object_isolation's checks.


def related_manager_name(manager) -> str:
    """The accessor a related manager serves (``books`` in ``author.books``), for messages.

    Many-to-many managers keep it as ``prefetch_cache_name``; reverse
    foreign-key managers as their field's ``remote_field.cache_name``.
    """
    return getattr(manager, "prefetch_cache_name", None) or manager.field.remote_field.cache_name


def wrap_related_manager_classes(wrap: Callable[[type], type]) -> None:
    """Pass every reverse foreign-key and many-to-many manager class Django builds through ``wrap``.

    The factories of ``django.db.models.fields.related_descriptors``,
    ``create_reverse_many_to_one_manager`` and
    ``create_forward_many_to_many_manager``, are replaced in that module
    (the descriptors look them up there when they build their manager
    class); the class a ``ReverseManyToOneDescriptor`` (or a
    ``ManyToManyDescriptor``, its subclass) already built and cached as
    ``related_manager_cls`` is forgotten, so it is built again through
    ``wrap``.
    """
    from django.apps import apps
    from django.db.models.fields import related_descriptors

    def through(original):
        @functools.wraps(original)
        def create(*args, **kwargs):
            return wrap(original(*args, **kwargs))

        return create

    for name in ("create_reverse_many_to_one_manager", "create_forward_many_to_many_manager"):
        setattr(related_descriptors, name, through(getattr(related_descriptors, name)))
    for model in apps.get_models(include_auto_created=True):
        for attr in vars(model).values():
            if isinstance(attr, related_descriptors.ReverseManyToOneDescriptor):
                attr.__dict__.pop("related_manager_cls", None)


def is_sql_query(value: Any) -> bool:
    """Whether ``value`` is a ``django.db.models.sql.Query`` (an inner queryset's query, as a lookup value)."""
    return isinstance(value, sql.Query)


def query_note(query, name: str) -> Any:
    """What ``set_query_note`` left on ``query`` under ``name``, else ``None``.

    Kept in the instance ``__dict__`` of the ``Query``: ``Query.clone()``
    copies that dict (shallowly), so every clone and chained queryset
    carries the note. Store immutable values.
    """
    return query.__dict__.get(name)


def set_query_note(query, name: str, value: Any) -> None:
    """Leave ``value`` on ``query`` (and the queries cloned from it from now on) under ``name``."""
    query.__dict__[name] = value


def after_relation_lookup(hook: Callable[[Any, Any], None]) -> None:
    """Call ``hook(query, value)`` when a relation lookup is added to a query.

    ``Query.check_related_objects(field, value, opts)``, which Django runs
    for each lookup as a filter is built (``filter``, ``exclude``, ``get``,
    ``Q``, ``__in``), is wrapped: once it passed, ``hook`` gets the
    lookup's value (an object, an iterable, a ``Query``, ...) when ``field``
    is a relation.
    """
    original = sql.Query.check_related_objects

    @functools.wraps(original)
    def check_related_objects(self, field, value, opts):
        original(self, field, value, opts)
        if field.is_relation:
            hook(self, value)

    sql.Query.check_related_objects = check_related_objects


def after_query_combine(hook: Callable[[Any, Any], None]) -> None:
    """Call ``hook(query, other)`` once ``Query.combine(other, connector)`` merged ``other`` into ``query``.

    What ``|``, ``&`` and ``^`` between querysets do.
    """
    original = sql.Query.combine

    @functools.wraps(original)
    def combine(self, rhs, connector):
        original(self, rhs, connector)
        hook(self, rhs)

    sql.Query.combine = combine


def before_query_runs(hook: Callable[[Any, Any], None]) -> None:
    """Call ``hook(query, compiler)`` each time a query is compiled to run; raising refuses it.

    ``Query.get_compiler(using, connection, elide_empty)`` is wrapped: every
    query, of every kind (``SELECT``, ``UPDATE``, ``DELETE``, ``INSERT``),
    gets its compiler there before its SQL is made; ``compiler.connection``
    is the database it runs on.
    """
    original = sql.Query.get_compiler

    @functools.wraps(original)
    def get_compiler(self, using=None, connection=None, elide_empty=True):
        compiler = original(self, using, connection, elide_empty)
        hook(self, compiler)
        return compiler

    sql.Query.get_compiler = get_compiler


def update_query_values(query) -> Iterator[Any] | None:
    """The values an ``UPDATE`` query sets, or ``None`` when ``query`` is not one.

    ``sql.UpdateQuery.values``: ``(field, model, value)`` triples, as
    ``QuerySet.update(**kwargs)`` added them.
    """
    if not isinstance(query, sql.UpdateQuery):
        return None
    return (value for _, _, value in query.values)


# -- hosts and commands ------------------------------------------------------------


def split_host(host: str) -> tuple[str, str]:
    """``django.http.request.split_domain_port``: ``(domain, port)`` of a validated host,
    the domain lower-cased with any trailing dot removed (undocumented)."""
    from django.http.request import split_domain_port

    return split_domain_port(host)


def command_instance(name: str):
    """A new instance of management command ``name``; ``KeyError`` when no app provides it.

    ``django.core.management.get_commands`` and ``load_command_class``
    (undocumented; ``call_command`` resolves names the same way).
    """
    from django.core.management import BaseCommand, get_commands, load_command_class

    app = get_commands()[name]
    return app if isinstance(app, BaseCommand) else load_command_class(app, name)


# -- the migration framework ---------------------------------------------------------


def migration_model():
    """``MigrationRecorder.Migration``: the model of a database's ``django_migrations`` table."""
    from django.db.migrations.recorder import MigrationRecorder

    return MigrationRecorder.Migration


def migration_recorder(connection):
    """``MigrationRecorder(connection)``: ``has_table()``, ``migration_qs``, ``applied_migrations()``."""
    from django.db.migrations.recorder import MigrationRecorder

    return MigrationRecorder(connection)


def disk_migrations():
    """A ``MigrationLoader`` of the migration files, built without a connection.

    Apps without migrations are allowed (``ignore_no_migrations``). Its
    ``graph`` (``leaf_nodes()``, ``forwards_plan()``, ``nodes[key]`` with
    ``operations`` and ``replaces``) and ``disk_migrations`` are what the
    migration plan reads.
    """
    from django.db.migrations.loader import MigrationLoader

    return MigrationLoader(None, ignore_no_migrations=True)


def changed_apps(loader, apps, labels) -> set[str]:
    """Apps among ``labels`` whose models differ from their migrations (what ``makemigrations --check`` finds).

    ``MigrationAutodetector`` between the loader's project state and
    ``ProjectState.from_apps(apps)``, with a non-interactive questioner.
    """
    from django.db.migrations.autodetector import MigrationAutodetector
    from django.db.migrations.questioner import NonInteractiveMigrationQuestioner
    from django.db.migrations.state import ProjectState

    questioner = NonInteractiveMigrationQuestioner(specified_apps=set(labels), dry_run=True)
    changes = MigrationAutodetector(loader.project_state(), ProjectState.from_apps(apps), questioner).changes(
        graph=loader.graph, trim_to_apps=set(labels)
    )
    return {label for label in changes if label in labels}


# -- migrating many databases with one migration graph ----------------------------


def migration_loader():
    """A ``MigrationLoader`` built from disk without a connection, or ``None`` when it has squashed migrations.

    Its graph does not depend on any database's history only when no
    migration replaces others (Django drops replaced or replacing nodes by
    what a database has applied); then one graph serves every tenant.
    """
    from django.db.migrations.loader import MigrationLoader

    loader = MigrationLoader(None)
    return None if loader.replacements else loader


def migration_executor(connection, progress_callback=None, *, loader=None, applied=None):
    """``MigrationExecutor(connection)``, reusing ``loader``'s graph (from ``migration_loader()``) when given.

    Django's executor builds a loader, reading every migration module, per
    database; with ``loader`` only this database's ``django_migrations`` rows
    are read, into a shallow copy. ``applied`` (the ``(app, name)`` keys of
    those rows, read by the caller on this connection) saves reading them
    again, and the catalogue query asking whether the table exists: the
    recorder is told it does (``MigrationRecorder._has_table``). The executor
    reads only the keys of ``loader.applied_migrations``. Relies on the
    executor's attribute names (``connection``, ``loader``, ``recorder``,
    ``progress_callback``).
    """
    import copy

    from django.db.migrations.executor import MigrationExecutor

    if loader is None:
        return MigrationExecutor(connection, progress_callback=progress_callback)
    executor = MigrationExecutor.__new__(MigrationExecutor)
    executor.connection = connection
    executor.recorder = migration_recorder(connection)
    executor.progress_callback = progress_callback
    executor.loader = copy.copy(loader)
    executor.loader.connection = connection
    if applied is None:
        executor.loader.applied_migrations = executor.recorder.applied_migrations()
    else:
        executor.recorder._has_table = True
        executor.loader.applied_migrations = dict.fromkeys(applied)
    return executor


def applied_project_state(executor):
    """The rendered project state after the database's applied migrations (``_create_project_state``).

    Rendering every model is most of what migrating one tenant costs in
    Python; a caller that migrates many tenants with the same history
    renders it once and passes ``state.clone()`` to ``executor.migrate``.
    """
    state = executor._create_project_state(with_applied_migrations=True)
    state.apps  # noqa: B018 - rendering is the point
    return state


def copy_instance(instance):
    """A copy of a model instance with its own field values and ``_state`` (``ModelState``).

    What ``copy.copy(instance)`` gives, without the pickling protocol it goes
    through (``Model.__reduce__``, ``ModelState.__getstate__``): per request,
    that was a third of the routing layer's cost. Relies on ``ModelState``'s
    attributes ``db`` and ``adding``; the related-object cache starts empty.
    """
    from django.db.models.base import ModelState

    row = object.__new__(type(instance))
    row.__dict__ = instance.__dict__.copy()
    state = row._state = ModelState()
    state.db = instance._state.db
    state.adding = instance._state.adding
    return row


# -- rows: conflict handling, generated keys, deletion, backend operations -------------
# Undocumented names the Table API builds on (Django 5.2; checked on upgrade).


def on_conflict(kind: str):
    """``django.db.models.constants.OnConflict`` member ``kind`` ("UPDATE" or "IGNORE").

    The enum ``bulk_create`` hands its compiler (an internal of Django's
    insert path, which ``compile_insert`` drives too).
    """
    from django.db.models.constants import OnConflict

    return OnConflict[kind]


def is_auto_field(field) -> bool:
    """Whether ``field`` is a database-generated key (Django's ``AutoFieldMixin``: AutoField and its kin)."""
    from django.db.models.fields import AutoFieldMixin

    return isinstance(field, AutoFieldMixin)


def ops_overrides(ops, name: str) -> bool:
    """Whether the backend's ``DatabaseOperations`` overrides ``BaseDatabaseOperations.<name>``."""
    from django.db.backends.base.operations import BaseDatabaseOperations

    return getattr(type(ops), name) is not getattr(BaseDatabaseOperations, name)


def delete_cascading(queryset, using: str, *, skip_related: Callable[[type], bool]) -> dict[str, int]:
    """Delete ``queryset``'s rows and what cascades from them, as ``QuerySet.delete()`` does; per-model counts.

    Django's deletion ``Collector`` (documented only through ``delete()``),
    told to leave out relations to models for which ``skip_related`` is
    true: a shared model pointing at a table this tenant lacks.
    """
    from django.db.models.deletion import Collector

    class _Collector(Collector):
        def related_objects(self, related_model, related_fields, objs):
            if skip_related(related_model):
                return related_model._base_manager.using(self.using).none()
            return super().related_objects(related_model, related_fields, objs)

    collector = _Collector(using=using, origin=queryset)
    collector.collect(queryset)
    _, per_model = collector.delete()
    return per_model
