"""What the commands that copy a tenant's rows share: ``tenant_move``, ``tenant_export``, ``tenant_import``.

Their common options (``add_copy_options``), ``--table`` specs
(``table_spec``), and the block running the copy with a progress bar and
one-line errors (``copying``).
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from django.core.management.base import CommandError
from django.utils.module_loading import import_string

from .inspection import command_errors


def add_copy_options(parser, *, tables: bool = True) -> None:
    """``--batch-size``, ``--table`` (with ``tables``), ``--json`` and ``--no-progress``."""
    parser.add_argument("--batch-size", type=int, default=None, metavar="N", help="Rows per batch (default 2000).")
    if tables:
        parser.add_argument(
            "--table",
            action="append",
            default=[],
            metavar="module.Class[:table[:pk]]",
            help="A table registered at run time that neither TENANT_TABLES nor this process knows (repeatable).",
        )
    parser.add_argument("--json", action="store_true", help="Print what was done as JSON.")
    parser.add_argument("--no-progress", action="store_true", help="No progress bar on stderr.")


def table_spec(value: str) -> tuple:
    """``module.Class[:table[:pk]]`` as a ``register_tables`` spec."""
    path, *rest = value.split(":")
    if len(rest) > 2 or not path:
        raise CommandError(f"--table {value!r}: use module.Class, module.Class:table or module.Class:table:pk")
    try:
        cls = import_string(path)
    except ImportError as exc:
        raise CommandError(f"--table {value!r}: cannot import {path!r} ({exc})") from None
    return (cls, *[part or None for part in rest])


def rows_per_batch(value: int | None) -> int:
    """``--batch-size``, or the default."""
    from ..lifecycle.move import DEFAULT_BATCH_SIZE

    return DEFAULT_BATCH_SIZE if value is None else value


def checked_lines(checks: Iterable[Any], done: str = "") -> list[str]:
    """A line per table of a result: its rows, what was ``done`` with them, and its verification."""
    lines = []
    for check in checks:
        rows = f"{check.rows} row{'s' if check.rows != 1 else ''}" + (f" {done}" if done else "")
        lines.append(f"  {check.table}: {rows}, verified (checksum {check.checksum[:12]})")
    return lines


@contextlib.contextmanager
def copying(labels: Mapping[str, str], *, progress: bool, file: str | None = None) -> Iterator[RowBar | None]:
    """The copy's progress bar (``None`` without ``progress``), closed afterwards; its errors as one line.

    ``file`` names the file the copy reads or writes, for an ``OSError``.
    """
    bar = RowBar(labels) if progress else None
    try:
        with command_errors():
            yield bar
    except OSError as exc:
        if file is None:
            raise
        raise CommandError(f"{file}: {exc.strerror or exc}") from None
    finally:
        if bar is not None:
            bar.close()


class RowBar:
    """A ``progress=`` callable driving a tqdm bar of rows on stderr; ``close()`` it when the work ends.

    The first step that carries a ``total`` starts the bar, ``"rows"``
    steps advance it (the table as its postfix), and ``labels`` names the
    bar's description at each phase it lists.
    """

    def __init__(self, labels: Mapping[str, str]) -> None:
        self.labels = labels
        self.bar: Any = None

    def __call__(self, step) -> None:
        if step.phase == "rows":
            if self.bar is not None:
                self.bar.set_postfix_str(step.table, refresh=False)
                self.bar.update(step.rows)
        elif step.total is not None and self.bar is None:
            from tqdm import tqdm

            self.bar = tqdm(total=step.total, file=sys.stderr, unit="row", desc=self.labels.get(step.phase))
        elif step.phase in self.labels and self.bar is not None:
            self.bar.set_description(self.labels[step.phase])

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
