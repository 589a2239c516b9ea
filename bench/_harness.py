"""What the benchmark processes share: the run (its id, directory and clean-up) and worker processes.

Each side of a comparison runs in a worker process of its own, with its own
Django settings: ``ts_worker.py`` (tenant-schema, ``ts_settings``) and
``django_tenants_side/worker.py`` (django-tenants). The orchestrator
(``run.py`` and the ``bench_*`` modules) sends each worker one JSON command
per line on its stdin and reads one JSON answer per line from its stdout;
the worker times its own work, so the round trip is never measured. A
worker's own output (Django, tracebacks, django-tenants' migration log)
goes to a log file in the run directory.

Everything a run creates is named after its run id (``tsb<hex>``):
PostgreSQL and MariaDB databases ``<id>_*``, the schema-isolation shared
database ``<id>_shared``, django-tenants' database ``<id>_dt``, and the
directory ``var/bench/<id>/`` (tenant registry, SQLite tenants, logs).
``Run.cleanup()`` drops exactly those, and runs whatever happens (also on
Ctrl-C or SIGTERM); a run killed outright is swept by the next run, which
finds its directory with a dead pid.
"""

from __future__ import annotations

import json
import os
import platform
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
VAR = ROOT / "var" / "bench"
PG = {"host": "127.0.0.1", "port": 5432, "user": "postgres"}
MYSQL = {"host": "127.0.0.1", "port": 3306, "user": "root"}


def loadavg() -> tuple[float, float, float]:
    return os.getloadavg()


def fmt_load(load: tuple[float, float, float]) -> str:
    return "/".join(f"{x:.2f}" for x in load)


# -- servers, reached with the drivers themselves (no Django in the orchestrator) --------


def pg_connect(dbname: str = "postgres"):
    import psycopg

    return psycopg.connect(dbname=dbname, autocommit=True, connect_timeout=5, **PG)


def mysql_connect():
    import MySQLdb

    return MySQLdb.connect(connect_timeout=5, **MYSQL)


def pg_reachable() -> bool:
    try:
        pg_connect().close()
        return True
    except Exception:  # noqa: BLE001 - reported as unreachable
        return False


def mysql_reachable() -> bool:
    try:
        mysql_connect().close()
        return True
    except Exception:  # noqa: BLE001
        return False


def versions() -> dict[str, str]:
    import sqlite3

    import django

    out = {
        "Python": platform.python_version(),
        "Django": django.get_version(),
        "SQLite": sqlite3.sqlite_version,
    }
    try:
        from importlib.metadata import version

        out["django-tenants"] = version("django-tenants")
        out["psycopg"] = version("psycopg")
        out["mysqlclient"] = version("mysqlclient")
    except Exception:  # noqa: BLE001 - not installed
        pass
    if pg_reachable():
        with pg_connect() as conn:
            out["PostgreSQL"] = conn.execute("SHOW server_version").fetchone()[0].split(" ")[0]
    if mysql_reachable():
        conn = mysql_connect()
        try:
            cursor = conn.cursor()
            cursor.execute("SELECT VERSION()")
            out["MariaDB"] = cursor.fetchone()[0].split("-")[0]
        finally:
            conn.close()
    out["cores"] = str(os.cpu_count())
    return out


def snapshot_source(directory: Path) -> str:
    """Copy tenant_schema/ and adapters/ into ``directory``: the code every worker of the run imports.

    A run takes minutes and starts many processes; the copy keeps them all
    on the code as it was when the run started, whatever is edited meanwhile.
    ``BENCH_SOURCE=DIR`` measures another checkout instead (e.g. a commit's).
    """
    source = Path(os.environ.get("BENCH_SOURCE") or ROOT)
    for name in ("tenant_schema", "adapters"):
        shutil.copytree(source / name, directory / name, ignore=shutil.ignore_patterns("__pycache__"))
    return str(directory)


def source_description() -> str:
    """Which code is measured: a commit, and whether tenant_schema/ or adapters/ differ from it."""
    if os.environ.get("BENCH_SOURCE"):
        return f"the checkout in {os.environ['BENCH_SOURCE']}"
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "tenant_schema", "adapters"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "the working tree (not a git checkout)"
    return f"commit {commit}" + (" with uncommitted changes in tenant_schema/ or adapters/" if dirty else "")


# -- the run ----------------------------------------------------------------------------


class Run:
    """One ``./run bench`` invocation: its id, directory, workers and clean-up."""

    def __init__(self, quick: bool = False) -> None:
        self.id = "tsb" + uuid.uuid4().hex[:6]
        self.quick = quick
        self.dir = VAR / self.id
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "owner.json").write_text(json.dumps({"pid": os.getpid(), "started": time.time()}))
        self.source_description = source_description()
        self.source = snapshot_source(self.dir / "source")
        self.workers: list[Worker] = []
        self.shared: dict = {}  # state the benchmarks share within the run (fleets already built, ...)

    # names ------------------------------------------------------------------
    @property
    def prefix(self) -> str:
        return f"{self.id}_"

    @property
    def schema_database(self) -> str:
        return f"{self.id}_shared"

    @property
    def dt_database(self) -> str:
        return f"{self.id}_dt"

    def env(self, **extra: str) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            BENCH_RUN_ID=self.id,
            BENCH_RUN_DIR=str(self.dir),
            PYTHONPATH=os.pathsep.join(
                [str(BENCH), self.source, os.path.join(self.source, "adapters"), str(ROOT), env.get("PYTHONPATH", "")]
            ).rstrip(os.pathsep),
            TENANT_SCHEMA_DISABLE_PLUGIN_AUTOLOAD="1",
            PYTHONHASHSEED="0",
        )
        env.update(extra)
        return env

    def ensure_schema_database(self) -> None:
        """The database schema isolation keeps its tenant schemas in (created once per run)."""
        if self.shared.get("schema_database"):
            return
        with pg_connect() as conn:
            conn.execute(f'CREATE DATABASE "{self.schema_database}"')
        self.shared["schema_database"] = True

    # workers ----------------------------------------------------------------
    def ts_worker(self, version: int = 3, name: str = "ts", **env: str) -> Worker:
        worker = Worker(
            [sys.executable, str(BENCH / "ts_worker.py")],
            self.env(BENCH_APP_VERSION=str(version), DJANGO_SETTINGS_MODULE="ts_settings", **env),
            self.dir / f"{name}-v{version}.log",
        )
        self.workers.append(worker)
        return worker

    def dt_worker(self, version: int = 3, name: str = "dt", **env: str) -> Worker:
        worker = Worker(
            [sys.executable, str(BENCH / "django_tenants_side" / "worker.py")],
            self.env(
                BENCH_APP_VERSION=str(version),
                DJANGO_SETTINGS_MODULE="django_tenants_side.settings",
                BENCH_DT_DATABASE=self.dt_database,
                **env,
            ),
            self.dir / f"{name}-v{version}.log",
        )
        self.workers.append(worker)
        return worker

    # clean-up ---------------------------------------------------------------
    def cleanup(self) -> list[str]:
        for worker in self.workers:
            worker.close()
        self.workers.clear()
        return sweep(self.id, self.dir)


def sweep(run_id: str, directory: Path) -> list[str]:
    """Drop every database of run ``run_id`` and remove its directory; what was dropped."""
    dropped: list[str] = []
    like = run_id + r"\_%"
    if pg_reachable():
        with pg_connect() as conn:
            names = [r[0] for r in conn.execute("SELECT datname FROM pg_database WHERE datname LIKE %s", [like])]
            for name in names:
                if name.startswith(run_id + "_"):  # belt and braces: only this run's names
                    conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
                    dropped.append(f"postgresql:{name}")
    if mysql_reachable():
        conn = mysql_connect()
        try:
            cursor = conn.cursor()
            cursor.execute("SELECT schema_name FROM information_schema.schemata WHERE schema_name LIKE %s", [like])
            for (name,) in cursor.fetchall():
                if name.startswith(run_id + "_"):
                    cursor.execute(f"DROP DATABASE IF EXISTS `{name}`")
                    dropped.append(f"mariadb:{name}")
        finally:
            conn.close()
    shutil.rmtree(directory, ignore_errors=True)
    return dropped


def sweep_stale_runs() -> list[str]:
    """Clean up after earlier runs that were killed before their own clean-up (their pid is gone)."""
    out: list[str] = []
    if not VAR.is_dir():
        return out
    for directory in VAR.iterdir():
        owner = directory / "owner.json"
        if not (directory.is_dir() and directory.name.startswith("tsb") and owner.exists()):
            continue
        try:
            pid = json.loads(owner.read_text())["pid"]
            os.kill(pid, 0)
            continue  # still running (another ./run bench): not ours to touch
        except ProcessLookupError:
            pass
        except (OSError, ValueError, KeyError):
            continue
        out += sweep(directory.name, directory)
    return out


def install_signal_handlers() -> None:
    """SIGTERM and SIGHUP unwind like Ctrl-C, so ``finally`` clean-up runs."""

    def handler(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, handler)


# -- worker processes -------------------------------------------------------------------


#: Longest a worker may take to answer one command before it is killed (a hang is a failure, not a figure).
CALL_TIMEOUT = float(os.environ.get("BENCH_CALL_TIMEOUT", "600"))


class WorkerError(RuntimeError):
    pass


class Worker:
    """A side's process: ``call(command, **arguments)`` returns what its handler returned."""

    def __init__(self, argv: list[str], env: dict[str, str], log: Path) -> None:
        self.log = log
        self.busy = False
        self._log_file = open(log, "ab")  # closed in close()
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log_file,
            env=env,
            cwd=str(ROOT),
            text=True,
            bufsize=1,
            start_new_session=True,  # Ctrl-C reaches the orchestrator, which closes the worker in order
        )
        self._answers: queue.Queue = queue.Queue()
        threading.Thread(target=self._reader, daemon=True).start()
        hello = self._read(CALL_TIMEOUT)
        if not hello.get("ok"):
            self.close()
            raise WorkerError(f"worker {argv[-1]} did not start: {hello.get('error')}\n{self.tail()}")
        self.info = hello.get("result", {})

    def _reader(self) -> None:
        for line in self.proc.stdout:
            self._answers.put(line)
        self._answers.put(None)

    def _read(self, timeout: float) -> dict:
        try:
            line = self._answers.get(timeout=timeout)
        except queue.Empty:
            self.kill()
            return {"ok": False, "error": f"no answer in {timeout:.0f} s: the worker was killed"}
        if line is None:
            code = self.proc.wait()
            return {"ok": False, "error": f"worker exited with {code}"}
        return json.loads(line)

    def kill(self) -> None:
        """End the worker and the processes it started (its own session), by its pid."""
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait()

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def call(self, command: str, **arguments):
        if self.proc.poll() is not None:
            raise WorkerError(f"worker has exited ({self.proc.returncode}):\n{self.tail()}")
        self.busy = True
        self.proc.stdin.write(json.dumps({"command": command, "arguments": arguments}) + "\n")
        self.proc.stdin.flush()
        answer = self._read(CALL_TIMEOUT)
        self.busy = False
        if not answer.get("ok"):
            raise WorkerError(f"{command} failed in the worker: {answer.get('error')}\n{self.tail()}")
        return answer.get("result")

    def close(self) -> None:
        if self.busy:  # interrupted in the middle of a command: it would not read "exit"
            self.kill()
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write(json.dumps({"command": "exit", "arguments": {}}) + "\n")
                self.proc.stdin.flush()
                self.proc.wait(timeout=30)
            except (OSError, subprocess.TimeoutExpired, ValueError):
                self.kill()
        if not self._log_file.closed:
            self._log_file.close()


def serve(handlers: dict, hello) -> None:
    """The worker side of the protocol: answer commands until ``exit`` or end of input.

    The protocol owns the real stdout; file descriptor 1 is pointed at
    stderr, so output of Django, of django-tenants and of child processes
    (multiprocessing) never mixes into it.
    """
    import traceback

    channel = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr

    def answer(ok: bool, payload) -> None:
        key = "result" if ok else "error"
        channel.write(json.dumps({"ok": ok, key: payload}) + "\n")
        channel.flush()

    try:
        answer(True, hello())
    except BaseException:  # noqa: BLE001 - reported to the orchestrator
        answer(False, traceback.format_exc())
        return
    for line in sys.stdin:
        message = json.loads(line)
        command = message["command"]
        if command == "exit":
            break
        try:
            answer(True, handlers[command](**message["arguments"]))
        except BaseException:  # noqa: BLE001
            traceback.print_exc()
            answer(False, traceback.format_exc())


def rss_mib() -> float:
    """Resident set size of this process (MiB), from /proc."""
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def alternate(routed, plain, host: str, paths: dict[str, str], requests: int) -> dict:
    """``requests`` requests to each view (``paths``), alternating (ABBA), each timed on its own.

    Every answer is compared (untimed) with the first one of its variant:
    both variants must keep reading the same tenant's data.
    """
    clients = {"routed": routed, "plain": plain}
    expected = {name: clients[name].get(paths[name], HTTP_HOST=host).content for name in clients}
    assert expected["routed"] == expected["plain"], expected
    times: dict[str, list[float]] = {"routed": [], "plain": []}
    clock = time.perf_counter
    for i in range(requests):
        for name in ("routed", "plain") if i % 2 == 0 else ("plain", "routed"):
            client, where = clients[name], paths[name]
            start = clock()
            response = client.get(where, HTTP_HOST=host)
            times[name].append(clock() - start)
            if response.content != expected[name]:
                raise AssertionError(f"{name} answered {response.content!r}, not {expected[name]!r}")
    return times


# -- fleets shared by the fleet-migration and touch benchmarks --------------------------


def grow_fleets(bench: Run, ts: Worker, dt: Worker | None, sizes: dict[str, int]) -> dict[str, dict]:
    """Grow each fleet to its size (``"dt"`` is django-tenants'); what each creation took (untimed set-up)."""
    out = {}
    fleets = bench.shared.setdefault("fleets", {})
    for server, count in sizes.items():
        if fleets.get(server, 0) >= count:
            continue
        if server == "dt":
            if dt is None:
                continue
            out[server] = dt.call("fleet_create", count=count)
        else:
            out[server] = ts.call("fleet_create", server=server, count=count)
        fleets[server] = out[server]["tenants"]
    return out
