"""``DDLBatch``: the one all-or-nothing mechanism for DDL on a tenant's database.

A batch is a Django schema editor plus an undo stack::

    with DDLBatch(tenant_db) as batch:
        batch.create_table(model)          # plus the after-create hooks' DDL
        batch.create_index(model, spec)
        batch.execute(statement, undo=...) # anything else, with how to undo it

Where the dialect's DDL rolls back (PostgreSQL, SQLite) the editor is atomic
and a failure rolls the whole batch back. Where it cannot (MySQL/MariaDB,
CockroachDB — each of whose DDL statements is its own transaction, as
``ddl_one_statement_per_transaction`` asks) every step that succeeded pushes
its undo, and a failure runs them newest first before the original error
is re-raised. Tables go on the stack only when their own ``CREATE TABLE``
succeeded (recognised as the exact SQL Django's editor generates for the
model), so a table a concurrent caller created is never dropped.

Deferred SQL (foreign keys, indexes) runs inside the batch, so its failure
is undone too (Django would run it in ``__exit__``, after the point where a
failure can still roll the block back).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from django.db import models

from .. import django_private
from ..plugins import get_plugins

if TYPE_CHECKING:  # pragma: no cover
    from ..databases import TenantDatabase
    from ..dialects import IndexSpec

Undo = Callable[[Any], None]  # called with a schema editor


def run_hook_statements(editor, statements_lists) -> None:
    """Execute the statements a list of hook results holds (each a list, or ``None``)."""
    for statements in statements_lists:
        for statement in statements or ():
            editor.execute(statement, params=None)  # no interpolation: a literal % is a %


def flush_deferred_sql(editor) -> None:
    """Run the editor's deferred SQL (foreign keys, indexes) inside the ``with`` block."""
    while editor.deferred_sql:
        editor.execute(editor.deferred_sql.pop(0))


def _with_auto_created(model: type[models.Model]) -> list[type[models.Model]]:
    """``model`` and the many-to-many tables ``create_model`` makes with it."""
    through = [
        f.remote_field.through for f in model._meta.local_many_to_many if f.remote_field.through._meta.auto_created
    ]
    return [model, *through]


class DDLBatch:
    """All of a batch's DDL on one tenant, or none of it (see the module docstring)."""

    def __init__(self, tenant_db: TenantDatabase, *, connection=None, hooks: bool = True) -> None:
        self.tenant_db = tenant_db
        self.connection = connection if connection is not None else tenant_db.connection
        dialect = tenant_db.dialect
        self.atomic = bool(tenant_db.can_rollback_ddl) and not dialect.ddl_one_statement_per_transaction
        self.hooks = hooks
        self._undo: list[tuple[str, Any]] = []
        self._expected: dict[str, type[models.Model]] = {}
        self._stack: contextlib.ExitStack | None = None
        self.editor = None

    # -- the batch ---------------------------------------------------------
    def __enter__(self) -> DDLBatch:
        stack = contextlib.ExitStack()
        if not self.atomic:
            stack.enter_context(self.connection.execute_wrapper(self._record))
        self.editor = stack.enter_context(self.connection.schema_editor(atomic=self.atomic))
        self._stack = stack
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        stack, self._stack = self._stack, None
        if exc_type is None:
            try:
                flush_deferred_sql(self.editor)  # inside the block: a failure is rolled back or undone
            except BaseException as error:
                self._close(stack, type(error), error, error.__traceback__)
                raise
        self._close(stack, exc_type, exc, tb)
        return False

    def _close(self, stack: contextlib.ExitStack, exc_type, exc, tb) -> None:
        """Leave the editor (commit, or roll back where atomic), then undo what a failure left."""
        try:
            stack.__exit__(exc_type, exc, tb)
        except BaseException:
            self._rollback()
            raise
        if exc_type is not None:
            self._rollback()

    def _record(self, execute, sql, params, many, context):
        result = execute(sql, params, many, context)
        model = self._expected.pop(sql, None) if isinstance(sql, str) else None
        if model is not None:
            self._undo.append(("table", model))
        return result

    # -- steps -------------------------------------------------------------
    def create_table(self, model: type[models.Model]) -> None:
        """``CREATE TABLE`` for ``model`` (its auto-created M2M tables too), then the after-create hooks."""
        if not self.atomic:
            deferred = list(self.editor.deferred_sql)  # table_sql() queues the table's foreign keys
            for each in _with_auto_created(model):
                self._expected[self.editor.table_sql(each)[0]] = each
            self.editor.deferred_sql[:] = deferred
        self.editor.create_model(model)
        if self.hooks:
            dialect = self.tenant_db.dialect
            run_hook_statements(
                self.editor,
                get_plugins().hook.tenant_schema_after_create_table(
                    dialect=dialect, schema_editor=self.editor, model=model, table_name=model._meta.db_table
                ),
            )

    def create_index(self, model: type[models.Model], spec: IndexSpec) -> None:
        """The dialect's ``CREATE INDEX`` for ``spec`` (undone by its ``DROP INDEX``)."""
        hook = get_plugins().hook
        dialect = self.tenant_db.dialect
        self.execute(
            hook.tenant_schema_index_sql(dialect=dialect, schema_editor=self.editor, model=model, index=spec),
            undo=lambda editor: editor.execute(
                hook.tenant_schema_drop_index_sql(
                    dialect=dialect, schema_editor=editor, model=model, name=spec.name, constraint=False
                )
            ),
        )

    def execute(self, statement: Any, *, undo: Undo | None = None) -> None:
        """Run one statement; ``undo(editor)`` reverses it where DDL cannot roll back."""
        self.editor.execute(statement)
        if undo is not None and not self.atomic:
            self._undo.append(("call", undo))

    # -- undo --------------------------------------------------------------
    def _rollback(self) -> None:
        """Reverse what succeeded, newest first (nothing to do where the editor was atomic)."""
        undo, self._undo = self._undo, []
        self._expected.clear()
        if not undo:
            return
        tables = [model for kind, model in reversed(undo) if kind == "table"]
        connection = self.connection
        with connection.cursor() as cursor:
            fks = {
                m: [
                    name
                    for name, info in connection.introspection.get_constraints(cursor, m._meta.db_table).items()
                    if info["foreign_key"]
                ]
                for m in tables
            }
        dialect = self.tenant_db.dialect
        hook = get_plugins().hook
        with connection.schema_editor(atomic=False) as editor:
            # Foreign keys of new tables first, so a cycle between them cannot block a drop.
            for model in tables:
                for name in fks[model]:
                    editor.execute(django_private.drop_foreign_key_statement(editor, model, name))
            for kind, item in reversed(undo):
                if kind == "call":
                    item(editor)
                    continue
                if self.hooks:
                    run_hook_statements(
                        editor,
                        hook.tenant_schema_before_drop_table(
                            dialect=dialect, schema_editor=editor, model=item, table_name=item._meta.db_table
                        ),
                    )
                editor.execute(editor.sql_delete_table % {"table": editor.quote_name(item._meta.db_table)})
