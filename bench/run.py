"""Run the benchmarks: ``./run bench [name ...] [--quick] [--no-docs] [-- options]``.

Each ``bench/bench_<name>.py`` module has ``run(bench, argv)`` and returns
a section: its table(s), the load average around it, and the targets it
checks. With no names, all of them run, in this order: onboarding,
routing, fleet_migrate, touch, batch_insert (touch reuses the fleets
fleet_migrate built). ``--quick`` uses small counts, to check that
everything runs. Options after ``--`` reach every selected module (each
takes the ones it knows), e.g. ``./run bench onboarding -- --tenants 5``.

docs/benchmarks.md is rewritten only by a complete, non-quick run, so
that every figure in it comes from one run; ``--docs PATH`` writes the
report elsewhere (any run), ``--no-docs`` writes nothing. Everything the
run creates (databases, schemas, files) is removed at the end, also after
a failure or Ctrl-C.
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import sys
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _harness import ROOT, Run, fmt_load, install_signal_handlers, loadavg, sweep_stale_runs, versions  # noqa: E402
from _report import Section, table  # noqa: E402

ORDER = ["onboarding", "routing", "fleet_migrate", "touch", "batch_insert", "move"]
DOCS = ROOT / "docs" / "benchmarks.md"


def available() -> list[str]:
    found = {p.stem[len("bench_") :] for p in HERE.glob("bench_*.py")}
    return [n for n in ORDER if n in found] + sorted(found - set(ORDER))


def main(argv: list[str]) -> int:
    own, rest = (argv[: argv.index("--")], argv[argv.index("--") + 1 :]) if "--" in argv else (argv, [])
    parser = argparse.ArgumentParser(prog="./run bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", help="benchmarks to run (default: all)")
    parser.add_argument("--quick", action="store_true", help="small counts: a smoke test of the whole run")
    parser.add_argument("--list", action="store_true", help="list the benchmarks")
    parser.add_argument("--no-docs", action="store_true", help="do not write docs/benchmarks.md")
    parser.add_argument("--docs", type=Path, help="write the report to this file instead")
    args = parser.parse_args(own)
    known = available()
    if args.list:
        print(__doc__.strip())
        print("\nbenchmarks: " + ", ".join(known))
        return 0
    unknown = [n for n in args.names if n not in known]
    if unknown:
        print(f"unknown benchmark(s) {', '.join(unknown)}; available: {', '.join(known)}", file=sys.stderr)
        return 2
    names = [n for n in known if n in args.names] if args.names else known
    complete = names == known and not args.quick and not rest
    target = args.docs or (DOCS if complete and not args.no_docs else None)

    install_signal_handlers()
    for line in sweep_stale_runs():
        print(f"removed what an interrupted earlier run left: {line}", file=sys.stderr)
    started, load_start = time.time(), loadavg()
    info = versions()
    bench = Run(quick=args.quick)
    print(f"run {bench.id} of {bench.source_description}: {', '.join(names)}{' (quick)' if args.quick else ''}")
    print(f"load {fmt_load(load_start)}")
    print("; ".join(f"{k} {v}" for k, v in info.items()))
    print()
    sections: list[Section] = []
    failed: list[str] = []
    try:
        for name in names:
            module = importlib.import_module(f"bench_{name}")
            began = time.time()
            try:
                sections.append(module.run(bench, list(rest)))
            except Exception:  # noqa: BLE001 - one benchmark failing does not lose the others' figures
                failed.append(name)
                print(f"benchmark {name} failed:\n{traceback.format_exc()}", file=sys.stderr)
            print(f"({name}: {time.time() - began:.0f} s)\n")
    finally:
        dropped = bench.cleanup()
        print(f"clean-up: dropped {len(dropped)} databases, removed {bench.dir}")
    elapsed, load_end = time.time() - started, loadavg()
    report = render(sections, info, names, bench, elapsed, load_start, load_end, failed)
    if target is not None and not failed:
        target.write_text(report)
        print(f"wrote {target}")
    elif complete and failed:
        print("not writing docs/benchmarks.md: a benchmark failed", file=sys.stderr)
    print(f"total {elapsed:.0f} s; load {fmt_load(load_start)} -> {fmt_load(load_end)}")
    return 1 if failed else 0


INTRO = """\
# Benchmarks

Written by `./run bench` (bench/run.py) from one complete run: every figure
below comes from that run, on the project's 2-core machine. Each table
compares variants measured side by side in the same run, interleaved, so
read the ratios; absolute times move with the machine (other jobs, the
disk). The load average (1, 5 and 15 minutes) is recorded for the run and
for each table. Benchmarks are never timed assertions in tests: the tests
check behaviour, this page reports speed.

django-tenants runs in its own processes with its own settings
(bench/django_tenants_side/: its PostgreSQL backend, `SHARED_APPS` and
`TENANT_APPS`, a `TenantMixin` client and a `DomainMixin` domain, as its
documentation sets them up) in a PostgreSQL database of its own. Both
sides serve the same tenant app, bench/benchapp: five models (accounts;
transactions with a unique pair and a date index; budgets; tags; notes
with a foreign key). tenant-schema's registry is a SQLite file, as in the
test suite.

A *floor* is the fastest raw way to do the same work: the database driver
itself, no framework, one transaction wherever the database allows one.
"""


def render(sections, info, names, bench, elapsed, load_start, load_end, failed) -> str:
    when = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [INTRO]
    lines.append(
        f"Run `{bench.id}` of {bench.source_description}, on {when}{' (quick)' if bench.quick else ''}: "
        f"{', '.join(names)}; "
        f"{elapsed / 60:.1f} minutes; load average {fmt_load(load_start)} at the start, "
        f"{fmt_load(load_end)} at the end.\n"
    )
    lines.append(table(list(info), [list(info.values())]) + "\n")
    targets = [t for s in sections for t in s.targets]
    if targets:
        lines.append("## Targets\n")
        rows = [
            [t.what, t.target, t.figure, "met" if t.met else ("not measured" if t.met is None else "**missed**")]
            for t in targets
        ]
        lines.append(table(["what", "target", "this run", ""], rows) + "\n")
    if failed:
        lines.append(f"Failed in this run: {', '.join(failed)}.\n")
    for section in sections:
        module = importlib.import_module(f"bench_{section.name}")
        lines.append(f"## {section.title}\n")
        lines.append(f"Measured by `./run bench {section.name}`. " + doc_of(module) + "\n")
        lines.append(section.body + "\n")
        after = getattr(module, "AFTERWORD", "")
        if after:
            lines.append(after.strip() + "\n")
    return "\n".join(lines)


def doc_of(module) -> str:
    """The module docstring after its first line: how the benchmark measures."""
    doc = (module.__doc__ or "").strip().replace("``", "`")
    parts = doc.split("\n\n", 1)
    return parts[1].strip() if len(parts) > 1 else parts[0]


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
