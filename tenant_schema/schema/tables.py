"""``Table``: one tenant table, as application code reads and writes it.

Every call goes through Django's ORM on the tenant's alias, so identifiers
are quoted by the backend and every value is a bound parameter. Keys of
``where``, ``order_by`` and row dicts are checked against the table's
columns before any SQL (see ``rows.py``), and so is a ``None`` for a NOT
NULL column; bulk writes use Django's compiled
SQL with column-at-a-time conversion (see ``bulk.py``).

Writes to a tenant in maintenance mode raise ``TenantUnavailable`` before
any SQL (``registry.check_writable``, as the router asks); reads go on.

Async methods carry Django's ``a`` prefix. Single reads use Django's async
ORM (``afirst``, ``acount``, async iteration); writes (which first ask the
registry about maintenance mode) and calls that need a transaction run
their sync twin through ``sync_to_async``, as Django's own ``asave`` and
``abulk_create`` do.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence
from typing import Any

from asgiref.sync import sync_to_async
from django.core.exceptions import ValidationError
from django.db import NotSupportedError, models, transaction
from django.db.models import F, Q

from .. import django_private
from ..databases import TenantDatabase, set_table_opener
from ..names import validate_identifier
from ..registry import check_writable
from . import bulk
from .mapping import introspect_model
from .rows import RowCodec, foreign_to_tenant

#: Most rows per ``IN (...)`` when reading back upserted rows; fewer where the
#: backend takes fewer parameters (Django's ``features.max_query_params``).
READ_BACK_CHUNK = 500


class Table:
    """A table of one tenant, bound to the tenant's alias.

    ``row_type`` is what rows come back as: the registered dataclass, the
    Django model, or ``dict`` for a table opened by name.
    """

    def __init__(
        self,
        tenant_db: TenantDatabase,
        model: type[models.Model],
        name: str,
        row_type: Any = dict,
        source: Any = None,
    ) -> None:
        self.tenant_db = tenant_db
        self.model = model
        self.name = name
        self.row_type = row_type
        self.source = source
        # A Django model registered under another table name is served by a
        # copy of it; rows are instances of the model that maps this table.
        codec_type = model if isinstance(row_type, type) and issubclass(row_type, models.Model) else row_type
        self._codec = RowCodec(model, codec_type)
        self._local = threading.local()

    def __repr__(self) -> str:
        return f"<Table {self.name!r} of tenant {self.tenant_db.slug!r}>"

    @property
    def columns(self) -> list[str]:
        """Column names, in table order."""
        return [f.column for f in self.model._meta.concrete_fields]

    # -- plumbing -----------------------------------------------------------
    @property
    def _alias(self) -> str:
        self.tenant_db.ensure_alias()
        return self.tenant_db.alias

    def _connection(self):
        return self.tenant_db.connection  # registers the alias, marks it used

    def _writable(self) -> None:
        """``TenantUnavailable`` when the tenant is in maintenance mode; called before a write's SQL."""
        check_writable(self.tenant_db.slug, self.tenant_db)

    def _queryset(self) -> models.QuerySet:
        return self.model._default_manager.db_manager(self._alias).all()

    def _pk_value(self, pk: Any) -> Any:
        if pk is None:
            raise ValueError(f"a primary key of table {self.name!r} is required, got None")
        return self._codec.norm(self._codec.pk, pk)

    def _rows(self, queryset: models.QuerySet) -> models.QuerySet:
        """What to iterate: model instances, or value tuples for dataclass and dict rows."""
        if self._codec.kind == "model":
            return queryset
        return queryset.values_list(*self._codec.out_attnames)

    def _row(self, fetched: Any) -> Any:
        if fetched is None or self._codec.kind == "model":
            return fetched
        return self._codec.from_values(fetched)

    # -- one row ------------------------------------------------------------
    def _instance_for_create(self, data: Any) -> models.Model:
        codec = self._codec
        if codec.kind == "model" and isinstance(data, self.model):
            codec.check_nulls(codec.to_values(data))
            return data
        values = codec.to_values(data)
        codec.check_required(values)
        codec.check_nulls(values)
        return self.model(**{f.attname: v for f, v in values.items()})

    def create(self, data: Any) -> Any:
        """Insert one row (a dict or a row instance); the stored row, generated key and defaults filled in."""
        obj = self._instance_for_create(data)
        self._save_new(obj)
        return self._codec.from_instance(obj)

    def _save_new(self, obj: models.Model) -> None:
        """Insert ``obj`` (checked and converted by the caller)."""
        self._writable()
        self._connection()
        obj.save(force_insert=True, using=self._alias)

    def insert(self, obj: Any) -> Any:
        """Same as ``create``."""
        return self.create(obj)

    def read(self, pk: Any) -> Any:
        """The row whose primary key is ``pk``, or ``None``."""
        queryset = self._rows(self._queryset().filter(pk=self._pk_value(pk)))
        self._connection()
        return self._row(next(iter(queryset[:1]), None))

    def _update_values(self, pk: Any, data: Any) -> dict[str, Any]:
        codec = self._codec
        values = codec.to_values(data, what="update")
        if codec.pk in values:
            given = values.pop(codec.pk)
            if given is not None and given != pk:
                raise ValueError(
                    f"update of table {self.name!r} would change the primary key from {pk!r} "
                    f"to {given!r}; delete and create instead"
                )
        codec.check_nulls(values, what="update")
        for f in codec.fields:  # auto_now columns of Django models, as save() would
            if getattr(f, "auto_now", False) and f not in values:
                values[f] = f.pre_save(self.model(), False)
        return {f.name: v for f, v in values.items()}

    def update(self, pk: Any, data: Any) -> Any:
        """Set the columns ``data`` gives on row ``pk``; the updated row, or ``None`` if there is none.

        ``data`` is a dict of the columns to change (values may be Django
        expressions such as ``F("balance") + 10``) or a whole row instance.
        """
        pk = self._pk_value(pk)
        values = self._update_values(pk, data)
        self._writable()
        with transaction.atomic(using=self._alias):
            if values and not self._queryset().filter(pk=pk).update(**values):
                return None
            return self.read(pk)

    def delete(self, pk: Any) -> bool:
        """Delete row ``pk`` (and rows that cascade from it); whether it existed."""
        queryset = self._queryset().filter(pk=self._pk_value(pk))
        self._writable()
        self._connection()
        per_model = django_private.delete_cascading(
            queryset, self._alias, skip_related=lambda model: foreign_to_tenant(model, self.tenant_db)
        )
        return per_model.get(self.model._meta.label, 0) > 0

    # -- many rows ------------------------------------------------------------
    def _select(
        self, where: Any = None, order_by: Any = None, limit: int | None = None, offset: int | None = None
    ) -> models.QuerySet:
        codec = self._codec
        queryset = codec.filter(self._queryset(), where)
        ordering = codec.ordering(order_by)
        if ordering:
            exprs = [expr for _, expr in ordering]
            if codec.pk not in {f for f, _ in ordering}:
                exprs.append(F(codec.pk.attname).asc())  # a stable order for pagination
            queryset = queryset.order_by(*exprs)
        elif not queryset.ordered:
            queryset = queryset.order_by(codec.pk.attname)
        for name, value in (("limit", limit), ("offset", offset)):
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
                raise ValueError(f"{name} must be a non-negative integer or None, got {value!r}")
        if limit is not None or offset:
            start = offset or 0
            queryset = queryset[start : start + limit if limit is not None else None]
        return self._rows(queryset)

    def list(
        self, where: Any = None, order_by: Any = None, limit: int | None = None, offset: int | None = None
    ) -> list[Any]:
        """Rows matching ``where``, ordered by ``order_by`` (the primary key by default).

        ``where`` is a dict of equality conditions or Django lookups
        (``{"amount__gte": 10}``), or a ``Q`` object; ``order_by`` is
        ``"name ASC, created_at DESC"``, Django's ``"-created_at"``, or a
        list of such terms.
        """
        queryset = self._select(where, order_by, limit, offset)
        self._connection()
        return [self._row(r) for r in queryset] if self._codec.kind != "model" else list(queryset)

    def count(self, where: Any = None) -> int:
        """How many rows match ``where``."""
        queryset = self._codec.filter(self._queryset(), where)
        self._connection()
        return queryset.count()

    def batch_create(
        self, rows: Iterable[Any], *, batch_size: int | None = None, returning: bool = False
    ) -> int | list[Any]:
        """Insert many rows in one transaction, with multi-row statements; how many.

        With ``returning=True`` the stored rows come back instead, in input
        order, generated keys included.
        """
        rows = rows if isinstance(rows, list) else list(rows)
        if not rows:
            return [] if returning else 0
        codec = self._codec
        batch = bulk.collect(codec, rows)
        codec.check_batch_nulls(batch.fields, batch.columns, batch.index)
        self._writable()
        connection = self._connection()
        parts = bulk.split_generated_keys(codec, batch)
        need_keys = returning and any(codec.pk not in p.fields for p in parts)
        if need_keys and not connection.features.can_return_rows_from_bulk_insert:
            raise NotSupportedError(
                f"{connection.display_name} cannot return generated keys from a bulk insert; "
                "call batch_create without returning=True, or create() rows one by one"
            )
        with transaction.atomic(using=connection.alias):
            keys = [
                bulk.insert(
                    codec, connection, part, batch_size=batch_size, returning=returning and codec.pk not in part.fields
                )
                for part in parts
            ]
        if not returning:
            return len(rows)
        return self._created_rows(rows, parts, keys)

    def _created_rows(self, rows: list[Any], parts: list[bulk.Batch], keys: list[Any]) -> list[Any]:
        codec = self._codec
        out: list[Any] = [None] * len(rows)
        for part, part_keys in zip(parts, keys):
            for i, position in enumerate(part.index):
                values = {f: codec.norm(f, column[i]) for f, column in zip(part.fields, part.columns)}
                if part_keys is not None:
                    values[codec.pk] = part_keys[i]
                original = rows[position]
                if codec.kind == "model" and isinstance(original, self.model):
                    original.pk = values[codec.pk]
                    row = original
                else:
                    row = codec.from_field_values(values)
                if codec.kind == "model":  # saved, as bulk_create leaves its objects
                    row._state.adding, row._state.db = False, self._alias
                out[position] = row
        return out

    def batch_update(self, rows: Iterable[Any], key_column: str = "id") -> int:
        """Update many rows in one transaction, each found by its ``key_column``; rows matched.

        Each row is a dict (or row instance) holding the key and the columns
        to set; rows that set the same columns share one statement.
        """
        codec = self._codec
        key = codec.field_for(key_column, "key_column")
        prepared = []
        for i, row in enumerate(rows):
            values = codec.to_values(row, what=f"row {i}")
            if values.get(key) is None:
                raise ValueError(
                    f"row {i} of batch_update on table {self.name!r} has no value for key column {key.column!r}"
                )
            codec.check_nulls(values, what=f"row {i}")
            prepared.append(values)
        if not prepared:
            return 0
        self._writable()
        connection = self._connection()
        with transaction.atomic(using=connection.alias):
            return bulk.update(codec, connection, key, prepared)

    def upsert(
        self,
        rows: Iterable[Any],
        conflict: str | Sequence[str] = ("id",),
        *,
        update: Sequence[str] | None = None,
        batch_size: int | None = None,
        returning: bool = False,
    ) -> int | list[Any]:
        """Insert rows, or update the existing row with the same ``conflict`` columns; how many.

        Uses the dialect's native upsert (``ON CONFLICT ... DO UPDATE``,
        ``ON DUPLICATE KEY UPDATE``) in one transaction. ``conflict`` must
        be the primary key or match a unique constraint or index. The
        columns the rows give (except ``conflict``) are updated, or only
        ``update`` when given. With ``returning=True`` the stored rows come
        back, in input order: each the row its input row wrote, read back by
        the keys the statement returns where the database can return them
        (see ``_read_back``).
        """
        codec = self._codec
        names = [conflict] if isinstance(conflict, str) else list(conflict)
        if not names:
            raise ValueError("upsert needs at least one conflict column")
        targets = [codec.field_for(c, "conflict") for c in names]
        rows = rows if isinstance(rows, list) else list(rows)
        if not rows:
            return [] if returning else 0
        batch = bulk.collect(codec, rows)
        codec.check_batch_nulls(batch.fields, batch.columns, batch.index)
        given = batch.fields[: batch.given]
        for f in targets:
            if f not in given:
                raise ValueError(f"upsert on table {self.name!r}: every row needs conflict column {f.column!r}")
        if update is None:
            update_fields = [f for f in given if f not in targets and not f.primary_key]
        else:
            update_fields = [codec.field_for(c, "update") for c in update]
            for f in update_fields:
                if f.generated:
                    raise ValueError(
                        f"upsert on table {self.name!r} updates column {f.column!r}, which the database computes "
                        "(a GeneratedField): leave it out of update"
                    )
        self._check_duplicates(batch, targets)
        self._writable()
        connection = self._connection()
        self._check_unique(connection, targets)
        conflict_args = {
            "on_conflict": django_private.on_conflict("UPDATE"),
            # Nothing else to set: "update" the key to itself, a no-op that
            # (unlike INSERT IGNORE on MySQL) hides no other error.
            "update_fields": update_fields or targets,
            "unique_fields": targets if connection.features.supports_update_conflicts_with_target else (),
        }
        # The keys of the rows written, where the statement can return them (RETURNING).
        written: list[Any] | None = None
        if returning and connection.features.can_return_rows_from_bulk_insert:
            written = [None] * len(rows)
        with transaction.atomic(using=connection.alias):
            for part in bulk.split_generated_keys(codec, batch):
                keys = bulk.insert(
                    codec, connection, part, batch_size=batch_size, returning=written is not None, **conflict_args
                )
                if written is None:
                    continue
                if keys is None or len(keys) != part.size or None in keys:
                    written = None  # not known for every row: match by conflict key instead
                else:
                    for position, key in zip(part.index, keys):
                        written[position] = key
            if returning:
                return self._read_back(batch, targets, written)
        return len(rows)

    def _conflict_keys(self, batch: bulk.Batch, targets: list[models.Field]) -> list[tuple]:
        """Each row's conflict key as the ORM stores it (``"1"`` -> ``1`` for an integer column)."""
        codec = self._codec
        columns = [batch.columns[batch.fields.index(f)] for f in targets]
        keys = []
        for i, values in enumerate(zip(*columns)):
            key = []
            for f, v in zip(targets, values):
                v = codec.norm(f, v)
                if hasattr(v, "resolve_expression"):  # the database computes it
                    key.append(v)
                    continue
                try:
                    key.append(f.to_python(v))
                except ValidationError as exc:
                    raise ValueError(
                        f"upsert row {i} of table {self.name!r}: conflict column {f.column!r} "
                        f"cannot hold {v!r} ({'; '.join(exc.messages)})"
                    ) from None
            keys.append(tuple(key))
        return keys

    def _check_duplicates(self, batch: bulk.Batch, targets: list[models.Field]) -> None:
        seen: dict[tuple, int] = {}
        for i, key in enumerate(self._conflict_keys(batch, targets)):
            if key in seen:
                raise ValueError(
                    f"upsert rows {seen[key]} and {i} of table {self.name!r} have the same "
                    f"conflict key {dict(zip((f.column for f in targets), key))}"
                )
            seen[key] = i

    def _check_unique(self, connection, targets: list[models.Field]) -> None:
        wanted = {f.column for f in targets}
        opts = self.model._meta
        declared = [{opts.pk.column}] + [{f.column} for f in opts.concrete_fields if f.unique]
        declared += [{opts.get_field(n).column for n in names} for names in opts.unique_together]
        declared += [{opts.get_field(n).column for n in c.fields} for c in opts.total_unique_constraints]
        if wanted in declared:
            return
        with connection.cursor() as cursor:
            constraints = connection.introspection.get_constraints(cursor, self.name)
        if any(info.get("unique") and set(info["columns"]) == wanted for info in constraints.values()):
            return
        raise ValueError(
            f"upsert on table {self.name!r}: no primary key, unique constraint or unique index "
            f"covers exactly {sorted(wanted)}; create one (create_index(..., unique=True)) "
            "or pick other conflict columns"
        )

    def _read_back(self, batch: bulk.Batch, targets: list[models.Field], written: list[Any] | None) -> list[Any]:
        """The stored rows, in input order (``None`` for a row that cannot be found).

        ``written`` holds the primary key of the row each input row wrote,
        as the statement returned it: reading back by it needs no guess at
        how the database compares conflict keys. Without it, rows are
        matched by their conflict key as the ORM stores it; a key stored
        differently (another case, under a case-insensitive collation) is
        looked up on its own, with the database's own ``=``.
        """
        codec = self._codec
        if written is not None:
            keys = [(codec.pk.to_python(k),) for k in written]
            found = self._fetch([codec.pk], keys)
        else:
            keys = self._conflict_keys(batch, targets)
            found = self._fetch(targets, keys)
            for key in dict.fromkeys(keys):
                if key not in found and None not in key:  # NULL never conflicts: no row to look up
                    condition = {f.name: v for f, v in zip(targets, key)}
                    obj = self._queryset().filter(**condition).first()
                    if obj is not None:
                        found[key] = obj
        return [codec.from_instance(found[k]) if k in found else None for k in keys]

    def _fetch(self, fields: list[models.Field], keys: list[tuple]) -> dict[tuple, models.Model]:
        """Rows whose ``fields`` hold one of ``keys``, by their stored values of ``fields``."""
        unique = list(dict.fromkeys(keys))
        found: dict[tuple, Any] = {}
        limit = self.tenant_db.connection.features.max_query_params
        step = max(1, min(READ_BACK_CHUNK, (limit or READ_BACK_CHUNK * len(fields)) // len(fields)))
        for start in range(0, len(unique), step):
            chunk = unique[start : start + step]
            if len(fields) == 1:
                q = Q(**{f"{fields[0].name}__in": [k[0] for k in chunk]})
            else:
                q = Q(*(Q(**{f.name: v for f, v in zip(fields, k)}) for k in chunk), _connector=Q.OR)
            for obj in self._queryset().filter(q):
                found[tuple(getattr(obj, f.attname) for f in fields)] = obj
        return found

    # -- transactions -----------------------------------------------------------
    def __enter__(self) -> Table:
        """``with table:`` is a transaction on the tenant (savepoints when nested)."""
        stack = self._local.__dict__.setdefault("stack", [])
        atomic = self.tenant_db.atomic()
        atomic.__enter__()
        stack.append(atomic)
        return self

    def __exit__(self, exc_type, exc, tb) -> bool | None:
        return self._local.stack.pop().__exit__(exc_type, exc, tb)

    async def __aenter__(self) -> Table:
        return await sync_to_async(self.__enter__)()

    async def __aexit__(self, exc_type, exc, tb) -> bool | None:
        return await sync_to_async(self.__exit__)(exc_type, exc, tb)

    # -- async twins --------------------------------------------------------------
    async def acreate(self, data: Any) -> Any:
        """Async ``create``."""
        obj = self._instance_for_create(data)
        await sync_to_async(self._save_new)(obj)  # what asave() does, with the maintenance check
        return self._codec.from_instance(obj)

    async def ainsert(self, obj: Any) -> Any:
        """Async ``insert``."""
        return await self.acreate(obj)

    async def aread(self, pk: Any) -> Any:
        """Async ``read``."""
        queryset = self._rows(self._queryset().filter(pk=self._pk_value(pk)))
        return self._row(await queryset.afirst())

    async def aupdate(self, pk: Any, data: Any) -> Any:
        """Async ``update`` (one transaction, in a worker thread)."""
        return await sync_to_async(self.update)(pk, data)

    async def adelete(self, pk: Any) -> bool:
        """Async ``delete`` (cascades in one transaction, in a worker thread)."""
        return await sync_to_async(self.delete)(pk)

    async def alist(
        self, where: Any = None, order_by: Any = None, limit: int | None = None, offset: int | None = None
    ) -> list[Any]:
        """Async ``list``."""
        queryset = self._select(where, order_by, limit, offset)
        return [self._row(r) async for r in queryset]

    async def acount(self, where: Any = None) -> int:
        """Async ``count``."""
        return await self._codec.filter(self._queryset(), where).acount()

    async def abatch_create(
        self, rows: Iterable[Any], *, batch_size: int | None = None, returning: bool = False
    ) -> int | list[Any]:
        """Async ``batch_create``."""
        rows = rows if isinstance(rows, list) else list(rows)
        return await sync_to_async(self.batch_create)(rows, batch_size=batch_size, returning=returning)

    async def abatch_update(self, rows: Iterable[Any], key_column: str = "id") -> int:
        """Async ``batch_update``."""
        rows = rows if isinstance(rows, list) else list(rows)
        return await sync_to_async(self.batch_update)(rows, key_column)

    async def aupsert(
        self,
        rows: Iterable[Any],
        conflict: str | Sequence[str] = ("id",),
        *,
        update: Sequence[str] | None = None,
        batch_size: int | None = None,
        returning: bool = False,
    ) -> int | list[Any]:
        """Async ``upsert``."""
        rows = rows if isinstance(rows, list) else list(rows)
        return await sync_to_async(self.upsert)(
            rows, conflict, update=update, batch_size=batch_size, returning=returning
        )


def open_table(tenant_db: TenantDatabase, name: str) -> Table:
    """A ``Table`` for an existing table not registered in this process: introspected, rows as dicts."""
    validate_identifier(name, "table name", tenant_db.dialect.max_identifier_length)
    return Table(tenant_db, introspect_model(tenant_db, name), name, row_type=dict)


set_table_opener(open_table)
