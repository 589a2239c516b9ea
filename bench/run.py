"""Run the benchmarks: ``./run bench [name ...] [-- options]``.

Every ``bench/bench_<name>.py`` module exposes ``run(argv)`` and prints its
own table. With no names, all of them run in name order; ``--list`` shows
the names. Options after ``--`` reach each selected module (for example
``./run bench batch_insert -- --rows 10000 --repeat 3``).
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # modules import their shared helpers (_tenant_setup) by name


def available() -> list[str]:
    return sorted(p.stem[len("bench_") :] for p in HERE.glob("bench_*.py"))


def main(argv: list[str]) -> int:
    names, rest = (argv[: argv.index("--")], argv[argv.index("--") + 1 :]) if "--" in argv else (argv, [])
    known = available()
    if "--list" in names or "-h" in names or "--help" in names:
        print(__doc__.strip())
        print("\nbenchmarks: " + ", ".join(known))
        return 0
    unknown = [n for n in names if n not in known]
    if unknown:
        print(f"unknown benchmark(s) {', '.join(unknown)}; available: {', '.join(known)}", file=sys.stderr)
        return 2
    for name in names or known:  # each module sets Django up itself (_tenant_setup.setup_django)
        module = importlib.import_module(f"bench_{name}")
        module.run(list(rest))
        print()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
