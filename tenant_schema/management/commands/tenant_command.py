"""``tenant_command <command> [args ...] (--tenant SLUG ... | --all)``: run any management command inside tenants.

The command runs in this process with the tenant selected (``tenant_context``),
so the router sends tenant-app models to the tenant's database; a command
with a ``--database`` option that the caller leaves out gets the tenant's
alias, ``tenant:<slug>`` (``dumpdata``, ``loaddata``, ``migrate``,
``showmigrations`` then work on the tenant's database, not ``default``).

Everything after the command name is the command's own, except
tenant_command's options (``--tenant``, ``--all``, ``--jobs``/``-j``,
``--json``, ``--progress``, ``--no-progress``), which may come before or
after it; where the command has an option of the same name (``dumpdata
--all``), it is the command's, and tenant_command's goes before the
command name. Django's ``-v`` given before the command name applies to
both.

With one ``--tenant`` the command's output is its own and its failure one
``CommandError`` line. With ``--all`` (every ready tenant) or several
``--tenant`` it runs in each, ``--jobs`` at a time in threads (Django
connections and the current tenant are per thread): each line it writes,
``print()`` included, is prefixed with ``[slug] ``, a failing tenant does
not stop the others, a summary follows, and the command exits non-zero if
any failed.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
import threading
import traceback
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import connections
from django.template.defaultfilters import pluralize

from ... import django_private
from ...context import tenant_context
from ...models import Tenant
from ...registry import get_tenants
from ..inspection import command_errors, one_line

#: tenant_command's options that take a value, and those that do not (how the arguments are split).
WITH_VALUE = {"--tenant", "--jobs", "-j"}
FLAGS = {"--all", "--json", "--progress", "--no-progress"}


def add_tenant_options(parser: argparse.ArgumentParser) -> None:
    """tenant_command's own options (parsed before the command name, and picked out after it)."""
    parser.add_argument(
        "--tenant",
        action="append",
        dest="tenants",
        metavar="SLUG",
        help="A ready tenant to run the command in; repeat it for several.",
    )
    parser.add_argument(
        "--all",
        action="store_true",
        dest="all_tenants",
        help="Run it in every ready tenant (never archived, unfinished or pooled ones).",
    )
    parser.add_argument("--jobs", "-j", type=int, help="Tenants run at once, in threads (default 1).")
    parser.add_argument(
        "--json",
        action="store_true",
        help="Print one JSON object with each tenant's result and output instead of the output.",
    )
    parser.add_argument(
        "--progress",
        action="store_true",
        default=None,
        help="With several tenants, show a progress bar (the default when stderr is a terminal).",
    )
    parser.add_argument("--no-progress", action="store_false", dest="progress")


class Command(BaseCommand):
    help = (
        "Run a management command inside one tenant (--tenant SLUG) or in every ready tenant (--all), "
        "with that tenant selected; a --database the command has defaults to the tenant's alias. "
        "tenant_command's options go before the command name where the command has one of the same name."
    )

    def add_arguments(self, parser):
        parser.add_argument("command_name", metavar="command", help="The management command to run.")
        parser.add_argument(
            "args",
            nargs=argparse.REMAINDER,
            metavar="...",
            help="Its arguments and options, as on its own command line.",
        )
        add_tenant_options(parser)

    def handle(self, *remainder, command_name, verbosity, **options):
        inner = self.inner_command(command_name)
        ours, theirs = split_arguments(remainder, inner.create_parser("manage.py", command_name))
        late = CommandParser(prog="tenant_command", add_help=False, allow_abbrev=False)
        add_tenant_options(late)
        late.set_defaults(**{key: options[key] for key in ("all_tenants", "jobs", "json", "progress")})
        late = late.parse_args(ours)  # a bad option value: one CommandError line
        given = options["tenants"] or []  # call_command(..., tenant="acme") names one
        slugs = [*([given] if isinstance(given, str) else given), *(late.tenants or [])]
        jobs = 1 if late.jobs is None else late.jobs
        if jobs < 1:
            raise CommandError(f"--jobs must be 1 or more, not {jobs}")
        args, template = inner_options(inner, command_name, theirs, verbosity)  # --help: before any tenant
        with command_errors():
            tenants = self.select(slugs, late.all_tenants, command_name, theirs)
        several = late.all_tenants or len(tenants) > 1
        if not several and not late.json:
            show_traceback = options["traceback"] or template.get("traceback", False)
            self.run_one(tenants[0], command_name, args, template, verbosity, show_traceback)
            return
        progress = late.progress
        if progress is None:
            progress = several and verbosity >= 1 and sys.stderr.isatty()
        results = self.run_many(tenants, command_name, args, template, jobs, late.json, progress, verbosity)
        failed = sorted(r["slug"] for r in results if not r["ok"])
        if late.json:
            summary = {"total": len(results), "succeeded": len(results) - len(failed), "failed": len(failed)}
            self.stdout.write(json.dumps({"results": results, "summary": summary}, indent=2))
        elif verbosity >= 1:
            if not results:
                self.stdout.write("No ready tenants: nothing to run.")
            else:
                names = f": {', '.join(failed)}" if failed else ""
                self.stdout.write(f"{len(results) - len(failed)} succeeded, {len(failed)} failed{names}.")
        if failed:
            total = f"{len(results)} tenant{pluralize(len(results))}"
            raise CommandError(f"{command_name} failed in {len(failed)} of {total}: {', '.join(failed)}")

    @staticmethod
    def inner_command(name: str) -> BaseCommand:
        """A fresh instance of command ``name`` (commands keep state on ``self``: one per tenant)."""
        if name == "tenant_command":
            raise CommandError("tenant_command cannot run tenant_command")
        try:
            return django_private.command_instance(name)
        except KeyError:
            raise CommandError(f"unknown command {name!r}: 'manage.py help' lists the commands") from None

    @staticmethod
    def select(slugs: list[str], all_tenants: bool, name: str, theirs: list[str]) -> list[Tenant]:
        """The tenants to run in: every ready one, or the named ones, which must be ready."""
        if all_tenants and slugs:
            raise CommandError("give --tenant SLUG or --all, not both")
        if all_tenants:
            return list(Tenant.objects.filter(status=Tenant.Status.READY).order_by("slug"))
        if not slugs:
            taken = [t for t in theirs if t.split("=", 1)[0] in {"--tenant", "--all"}]
            hint = (
                f" ({name} has its own {taken[0].split('=', 1)[0]}: put tenant_command's before the command name)"
                if taken
                else ""
            )
            raise CommandError(f"name the tenants to run {name} in: --tenant SLUG (repeatable) or --all{hint}")
        tenants = get_tenants(slugs)  # one registry query; TenantNotFound naming every unknown slug
        for tenant in tenants:
            if tenant.status != Tenant.Status.READY:
                raise CommandError(
                    f"tenant {tenant.slug!r} is {tenant.status}, not ready: tenant_command runs commands "
                    "in ready tenants only"
                )
        return tenants

    def run_one(self, tenant: Tenant, name: str, args, template: dict, verbosity: int, show_traceback: bool) -> None:
        """Run the command in one tenant, its output its own; a failure is one ``CommandError`` line."""
        error = run_in(tenant, name, args, template, self.stdout, self.stderr)
        if error is None:
            return
        if show_traceback:
            raise error
        if verbosity >= 2:
            self.stderr.write("".join(traceback.format_exception(error)).rstrip("\n"))
        raise CommandError(f"{name} failed in tenant {tenant.slug!r}: {describe(error)}") from None

    def run_many(self, tenants, name, args, template, jobs, as_json, progress, verbosity) -> list[dict]:
        """Run the command in each tenant, ``jobs`` at a time; each tenant's result, sorted by slug."""
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=len(tenants), file=sys.stderr, unit="tenant", desc=name)
        console = Console(bar)
        stdout, stderr = ThreadStreams(sys.stdout), ThreadStreams(sys.stderr)
        results: list[dict] = []

        def one(tenant: Tenant) -> tuple[dict, BaseException | None]:
            def prefixed(target) -> Callable[[str], None] | None:
                if as_json:
                    return None
                return lambda line: console.write(target, f"[{tenant.slug}] {line}" if line else f"[{tenant.slug}]")

            out, err = Lines(prefixed(self.stdout)), Lines(prefixed(self.stderr))
            stdout.local.stream, stderr.local.stream = out, err  # print() in the command, and logging to stderr
            try:
                error = run_in(tenant, name, args, template, out, err)
            finally:
                stdout.local.stream = stderr.local.stream = None
                out.finish()
                err.finish()
                if threading.current_thread() is not threading.main_thread():
                    connections.close_all()  # this worker thread's, e.g. the registry's
            result = {"slug": tenant.slug, "ok": error is None, "error": None if error is None else describe(error)}
            if as_json:
                result.update(output=out.text, stderr=err.text)
            return result, error

        def done(result: dict, error: BaseException | None) -> None:
            if error is not None and not as_json:
                console.write(self.stderr, f"[{result['slug']}] failed: {result['error']}")
                if verbosity >= 2:
                    for line in "".join(traceback.format_exception(error)).splitlines():
                        console.write(self.stderr, f"[{result['slug']}] {line}")
            console.step(result["slug"])
            results.append(result)

        try:
            with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
                if jobs == 1:
                    for tenant in tenants:
                        done(*one(tenant))
                else:
                    pool = ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="tenant_command")
                    try:
                        for future in as_completed([pool.submit(one, tenant) for tenant in tenants]):
                            done(*future.result())
                    finally:  # Ctrl-C: tenants not started yet are not started
                        pool.shutdown(wait=True, cancel_futures=True)
        finally:
            console.close()
        return sorted(results, key=lambda r: r["slug"])


def split_arguments(remainder, parser: argparse.ArgumentParser) -> tuple[list[str], list[str]]:
    """(tenant_command's options, the command's arguments) among what follows the command name.

    An option the command itself has is the command's, with its value; the
    rest of tenant_command's options are picked out, with theirs.
    """
    known = {option: action for action in parser._actions for option in action.option_strings}
    ours: list[str] = []
    theirs: list[str] = []
    tokens = iter(str(token) for token in remainder)
    for token in tokens:
        option, has_value = token.split("=", 1)[0], "=" in token
        if option in known:
            theirs.append(token)
            if not has_value and known[option].nargs in (None, 1):
                theirs.extend(_next(tokens))
        elif option in WITH_VALUE or option in FLAGS:
            ours.append(token)
            if option in WITH_VALUE and not has_value:
                ours.extend(_next(tokens))
        else:
            theirs.append(token)
    return ours, theirs


def _next(tokens) -> list[str]:
    """The next token as a one-item list, or none at the end."""
    return [token for token in [next(tokens, None)] if token is not None]


def inner_options(command: BaseCommand, name: str, argv: list[str], verbosity: int) -> tuple[tuple, dict]:
    """The command's ``(args, options)`` from its arguments, parsed once before any tenant runs.

    A usage error is one ``CommandError`` line and ``--help`` prints the
    command's help, before anything ran. ``database`` is ``None`` when the
    command has the option and it was not given: each tenant fills in its
    alias. Its choices, the aliases configured so far, are dropped: a tenant's
    alias is registered when the tenant runs (an unknown alias then fails there).
    """
    parser = command.create_parser("manage.py", name)
    defaults = {"verbosity": verbosity}
    if parser.get_default("database") is not None:
        defaults["database"] = None
        for action in parser._actions:
            if action.dest == "database":
                action.choices = None
    parser.set_defaults(**defaults)
    try:
        options = vars(parser.parse_args(argv))
    except CommandError as exc:
        raise CommandError(f"{name}: {exc}") from None
    args = options.pop("args", ())
    options["skip_checks"] = True  # as call_command: checked once, by tenant_command itself
    return args, options


def run_in(tenant: Tenant, name: str, args, template: dict, stdout, stderr) -> BaseException | None:
    """Run command ``name`` with ``tenant`` selected; the exception it failed with, ``None`` if it succeeded.

    Its connections to the tenant are closed, and the tenant's alias
    forgotten, afterwards, so a run over 10,000 tenants holds one per thread.
    """
    tenant_db = tenant.database
    try:
        command = Command.inner_command(name)
        options = {**template, "stdout": stdout, "stderr": stderr}
        with tenant_db.released(), tenant_context(tenant):
            tenant_db.ensure_alias()
            if "database" in options and options["database"] is None:
                options["database"] = tenant_db.alias
            command.execute(*args, **options)
    except SystemExit as exc:  # makemigrations --check and the like
        return None if exc.code in (0, None) else exc
    except Exception as exc:  # noqa: BLE001 - reported per tenant
        return exc
    return None


def describe(error: BaseException) -> str:
    """One line for a failed run."""
    if isinstance(error, SystemExit):
        return f"exited with status {error.code}"
    if isinstance(error, CommandError):
        return one_line(error)
    return f"{type(error).__name__}: {one_line(error)}"


class Lines(io.TextIOBase):
    """One tenant's stdout or stderr: each line goes to ``emit`` once complete; without ``emit`` the text is kept."""

    def __init__(self, emit: Callable[[str], None] | None) -> None:
        self.emit = emit
        self.kept: list[str] = []
        self.partial = ""

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        if self.emit is None:
            self.kept.append(text)
        else:
            *lines, self.partial = (self.partial + text).split("\n")
            for line in lines:
                self.emit(line)
        return len(text)

    def finish(self) -> None:
        """Emit a last line that has no newline."""
        if self.emit is not None and self.partial:
            self.emit(self.partial)
        self.partial = ""

    @property
    def text(self) -> str:
        return "".join(self.kept)


class ThreadStreams:
    """Stands in for ``sys.stdout`` or ``sys.stderr`` while tenants run.

    What a thread running a tenant writes (``print()``, a logging handler
    writing to ``sys.stderr``) goes to that tenant's stream; what any other
    thread writes goes to the real one.
    """

    def __init__(self, real) -> None:
        self.real = real
        self.local = threading.local()

    def target(self):
        stream = getattr(self.local, "stream", None)
        return self.real if stream is None else stream

    def write(self, text: str) -> int:
        return self.target().write(text)

    def flush(self) -> None:
        self.target().flush()

    def __getattr__(self, name: str):
        return getattr(self.target(), name)


class Console:
    """Writes the lines of tenants running at once, each whole, above the progress bar if there is one."""

    def __init__(self, bar=None) -> None:
        self.bar = bar
        self.lock = threading.Lock()

    def write(self, target, line: str) -> None:
        with self.lock:
            if self.bar is not None:
                self.bar.clear()
            target.write(line)
            if self.bar is not None:
                self.bar.refresh()

    def step(self, slug: str) -> None:
        if self.bar is not None:
            with self.lock:
                self.bar.set_postfix_str(slug, refresh=False)
                self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
