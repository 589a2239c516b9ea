"""tenant_schema.celery with a real worker process and the Redis broker, never eager mode.

One worker (``celery -A tests.celeryapp worker --pool=solo``) serves the
module: one thread, so a task sees exactly what the task before it left
behind (a tenant still selected, a connection still open). It reads this
run's test registry and consumes this run's own queue (tests/celeryapp.py).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest

from .conftest import new_tenant_id, require_redis

ROOT = Path(__file__).resolve().parent.parent
#: Seconds any one wait may take: a result, the worker starting or stopping.
TIMEOUT = 30


class Worker:
    def __init__(self, process: subprocess.Popen, log: Path) -> None:
        self.process = process
        self.log = log

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def get(self, result, *, propagate: bool = True):
        """The task's result, within ``TIMEOUT`` (the worker's log in the error otherwise)."""
        try:
            return result.get(timeout=TIMEOUT, propagate=propagate)
        except Exception as exc:
            if propagate and type(exc).__name__ != "TimeoutError":
                raise
            raise AssertionError(f"{exc!r}; worker alive: {self.process.poll() is None}; log:\n{self.tail()}") from exc

    def failure(self, result) -> BaseException:
        """The exception the task failed with (it must have failed)."""
        error = self.get(result, propagate=False)
        assert result.state == "FAILURE", (result.state, error)
        return error

    def idle_state(self) -> dict:
        """What a task sent with no tenant finds in the worker thread."""
        from .celeryapp import where

        return self.get(where.delay())


@pytest.fixture(scope="module")
def worker(django_db_setup, tmp_path_factory):
    """The worker process, started once for the module and stopped even when tests fail."""
    require_redis()
    from django.db import connections

    from . import celeryapp

    log = tmp_path_factory.mktemp("celery") / "worker.log"
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "TENANT_SCHEMA_CELERY_REGISTRY": connections["default"].settings_dict["NAME"],
        "TENANT_SCHEMA_CELERY_QUEUE": celeryapp.QUEUE,
        "TENANT_SCHEMA_DISABLE_PLUGIN_AUTOLOAD": "1",
    }
    command = [
        *(sys.executable, "-m", "celery", "-A", "tests.celeryapp", "worker", "--pool=solo", "--loglevel=INFO"),
        *("--queues", celeryapp.QUEUE, "--hostname", f"tenant-schema-tests-{os.getpid()}@%h"),
        *("--without-gossip", "--without-mingle", "--without-heartbeat"),
    ]
    with log.open("w") as out:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    running = Worker(process, log)
    try:
        first = celeryapp.where.delay()
        deadline = time.monotonic() + TIMEOUT
        while not first.ready():
            assert process.poll() is None, f"the worker exited with {process.returncode}:\n{running.tail()}"
            assert time.monotonic() < deadline, f"the worker ran no task within {TIMEOUT} s:\n{running.tail()}"
            time.sleep(0.1)
        yield running
    finally:
        process.terminate()  # warm shutdown
        try:
            process.wait(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=TIMEOUT)


@pytest.fixture
def tenants(server_key):
    """Factory for ready tenants on each live server, with the tenant app's tables; purged afterwards."""
    from tenant_schema import drop_tenant_db, register_tenant

    made = []

    def make():
        tenant = register_tenant(new_tenant_id(), server=server_key)
        made.append(tenant.slug)
        return tenant

    yield make
    for slug in made:
        drop_tenant_db(slug)


def redis_key() -> str:
    return f"tenant-schema-tests:{uuid.uuid4().hex}"


def wait_for_list(key: str, length: int, worker: Worker) -> list[str]:
    from .celeryapp import redis_client

    client = redis_client()
    deadline = time.monotonic() + TIMEOUT
    while client.llen(key) < length:
        assert time.monotonic() < deadline, f"{client.lrange(key, 0, -1)} after {TIMEOUT} s; log:\n{worker.tail()}"
        time.sleep(0.1)
    return [item.decode() for item in client.lrange(key, 0, -1)]


IDLE = {"tenant": None, "open_connections": 0, "tenant_aliases": []}


# -- the tenant travels with the task -----------------------------------------------------


def test_a_task_sent_inside_a_tenant_runs_in_that_tenant(worker, tenants):
    from tenant_schema import tenant_context

    from .celeryapp import add_note

    acme, globex = tenants(), tenants()
    with tenant_context(acme):
        at_acme = add_note.delay("acme's note")
    with tenant_context(globex):
        at_globex = add_note.delay("globex's note")

    ran = worker.get(at_acme)
    assert ran["tenant"] == acme.slug
    assert ran["notes"] == ["acme's note"]
    assert ran["open_connections"] >= 1 and ran["tenant_aliases"] == [acme.database.alias]  # while it ran
    assert worker.get(at_globex)["notes"] == ["globex's note"]
    # Afterwards the worker thread holds neither the tenant nor its connection nor its alias.
    assert worker.idle_state() == IDLE


def test_a_task_sent_with_no_tenant_runs_with_none(worker):
    from tenant_schema import NoTenantSelected

    from .celeryapp import add_note

    assert worker.idle_state() == IDLE
    error = worker.failure(add_note.delay("nobody's note"))
    assert isinstance(error, NoTenantSelected), error


def test_an_explicit_header_is_kept_and_send_task_carries_the_tenant(worker, tenants):
    from tenant_schema import TenantNotFound, tenant_context
    from tenant_schema.celery import TENANT_HEADER

    from .celeryapp import app, where

    acme, globex = tenants(), tenants()
    with tenant_context(acme):
        to_globex = where.apply_async(headers={TENANT_HEADER: globex.slug})
        to_nobody = where.apply_async(headers={TENANT_HEADER: None, "other": "kept"})
        by_name = app.send_task("tests.celeryapp.where")
        to_unknown = where.apply_async(headers={TENANT_HEADER: "no-such-tenant"})
        to_garbage = where.apply_async(headers={TENANT_HEADER: 42})
    assert worker.get(to_globex)["tenant"] == globex.slug
    assert worker.get(to_nobody)["tenant"] is None
    assert worker.get(by_name)["tenant"] == acme.slug
    for result, expected in ((to_unknown, "'no-such-tenant', which is not registered"), (to_garbage, "not 42")):
        error = worker.failure(result)
        assert isinstance(error, TenantNotFound) and expected in str(error), error


def test_chains_groups_and_chords_keep_the_tenant(worker, tenants):
    from celery import chain, chord, group

    from tenant_schema import tenant_context

    from .celeryapp import collect, where

    acme = tenants()
    with tenant_context(acme):
        chained = chain(where.si(), where.si()).delay()  # the worker sends the second step
        grouped = group(where.si(), where.si()).delay()
        chorded = chord([where.si(), where.si()], collect.s()).delay()  # the worker sends the callback
    assert worker.get(chained.parent)["tenant"] == acme.slug
    assert worker.get(chained)["tenant"] == acme.slug
    assert [ran["tenant"] for ran in worker.get(grouped)] == [acme.slug, acme.slug]
    assert worker.get(chorded) == [acme.slug] * 3
    assert worker.idle_state() == IDLE


# -- release after failures and retries ---------------------------------------------------


def test_a_failing_task_releases_its_tenant_and_connections(worker, tenants):
    from tenant_schema import tenant_context

    from .celeryapp import fail_in_tenant

    acme = tenants()
    with tenant_context(acme):
        failing = fail_in_tenant.delay()
    error = worker.failure(failing)
    assert isinstance(error, RuntimeError) and "on purpose" in str(error)
    assert worker.idle_state() == IDLE


def test_a_retried_task_keeps_its_tenant_and_releases_it_each_time(worker, tenants):
    from tenant_schema import tenant_context
    from tenant_schema.celery import TENANT_HEADER

    from .celeryapp import retry_once

    acme = tenants()
    with tenant_context(acme):
        retried = retry_once.apply_async(headers={"probe": "kept"})
    ran = worker.get(retried)
    assert (ran["tenant"], ran["retries"]) == (acme.slug, 1)  # the retry, sent by the worker, kept the tenant
    # self.retry() re-sent the request's headers (ours and the caller's), not only the current tenant's.
    assert ran["headers"][TENANT_HEADER] == acme.slug and ran["headers"]["probe"] == "kept"
    assert retried.retries == 1
    assert worker.idle_state() == IDLE


# -- tenants that went away while their task waited ----------------------------------------


def test_an_archived_tenants_queued_task_fails_cleanly_without_running(worker, tenants):
    from tenant_schema import TenantNotReady, archive_tenant, tenant_context

    from .celeryapp import record, redis_client

    acme, key = tenants(), redis_key()
    with tenant_context(acme):
        queued = record.apply_async((key,), countdown=1.5)  # runs after the archive
    archive_tenant(acme)
    error = worker.failure(queued)
    assert isinstance(error, TenantNotReady), error
    assert f"tenant {acme.slug!r}, which is archived now" in str(error) and "was not run" in str(error)
    assert redis_client().llen(key) == 0  # the body did not run
    assert queued.retries == 0  # autoretry_for=(Exception,) did not retry it
    assert worker.idle_state() == IDLE


def test_a_purged_tenants_queued_task_fails_cleanly_without_running(worker, tenants):
    from tenant_schema import TenantNotFound, drop_tenant_db, tenant_context

    from .celeryapp import record, redis_client

    acme, key = tenants(), redis_key()
    with tenant_context(acme):
        queued = record.apply_async((key,), countdown=1.5)
    drop_tenant_db(acme.slug)
    error = worker.failure(queued)
    assert isinstance(error, TenantNotFound), error
    assert f"tenant {acme.slug!r}, which is not registered" in str(error)
    assert redis_client().llen(key) == 0
    assert queued.retries == 0
    assert worker.idle_state() == IDLE


def test_a_task_for_a_purged_tenant_never_runs_in_the_tenant_registered_under_its_slug_since(worker, tenants):
    """The slug is free again after a purge: a new customer takes it while the old task waits in the queue."""
    from tenant_schema import TenantNotFound, drop_tenant_db, register_tenant, tenant_context

    from .celeryapp import record, redis_client

    acme, key = tenants(), redis_key()
    with tenant_context(acme):
        queued = record.apply_async((key,), countdown=1.5)
    drop_tenant_db(acme.slug)
    newcomer = register_tenant(acme.slug, server=acme.server)
    try:
        error = worker.failure(queued)
    finally:
        drop_tenant_db(newcomer.slug)
    assert isinstance(error, TenantNotFound), error
    assert f"tenant {acme.slug!r}, which was purged since; the slug now names another tenant" in str(error)
    assert redis_client().llen(key) == 0, "the old tenant's task did not run in the new tenant"
    assert queued.retries == 0
    assert worker.idle_state() == IDLE


# -- fan-out and the beat recipe -------------------------------------------------------------


def fleet(make_tenant_db):
    """Three ready tenants, plus an archived one, a pooled database and an unfinished registration."""
    from tenant_schema import archive_tenant
    from tenant_schema.lifecycle.pool import pool_slug
    from tenant_schema.models import Tenant

    ready = [make_tenant_db("sqlite") for _ in range(3)]
    archive_tenant(make_tenant_db("sqlite").slug)
    for status in (Tenant.Status.POOLED, Tenant.Status.PROVISIONING):
        slug = pool_slug() if status == Tenant.Status.POOLED else new_tenant_id()
        Tenant.objects.create(
            slug=slug, server="sqlite", database_name=f"tstest_{slug.replace('-', '_')}", status=status
        )
    return sorted(tenant.slug for tenant in ready)


def test_for_each_tenant_reaches_every_ready_tenant_exactly_once(worker, make_tenant_db):
    from tenant_schema import tenant_context
    from tenant_schema.celery import for_each_tenant

    from .celeryapp import record

    ready = fleet(make_tenant_db)
    key = redis_key()
    with tenant_context(ready[0]):  # the tenant current here does not matter
        sent = for_each_tenant(record, (key,), batch_size=2)  # two registry pages
    assert sent == 3
    assert sorted(wait_for_list(key, 3, worker)) == ready
    worker.idle_state()  # the queue is FIFO: anything sent before this has run
    assert sorted(wait_for_list(key, 3, worker)) == ready


def test_the_beat_recipe_fans_out_by_task_name_with_staggered_countdowns(worker, make_tenant_db):
    from celery.signals import before_task_publish

    from tenant_schema.celery import FOR_EACH_TENANT_TASK, TENANT_HEADER, for_each_tenant, stagger

    from .celeryapp import app, record

    ready = fleet(make_tenant_db)
    # What beat sends: the registered fan-out task, by name, with no tenant.
    key = redis_key()
    fan_out = app.send_task(FOR_EACH_TENANT_TASK, args=["tests.celeryapp.record", [key]], kwargs={"spread": 1.0})
    assert worker.get(fan_out) == 3
    assert sorted(wait_for_list(key, 3, worker)) == ready
    worker.get(record.apply_async((key,), countdown=1.5))  # runs after the whole window: nothing came twice
    assert sorted(wait_for_list(key, 4, worker)) == sorted(ready + [""])

    # Each tenant's message is delayed by its stagger: seen as sent, on a queue no worker reads.
    sent = {}

    def seen(sender=None, headers=None, **kwargs):
        sent[headers[TENANT_HEADER]] = datetime.fromisoformat(headers["eta"])

    unread = f"{app.conf.task_default_queue}-unread"
    before_task_publish.connect(seen, weak=False)
    try:
        started = datetime.now(UTC)
        for_each_tenant(record, (redis_key(),), spread=3600, queue=unread)
    finally:
        before_task_publish.disconnect(seen)
        with app.connection_for_write() as connection:
            connection.default_channel.queue_delete(unread)
    assert sorted(sent) == ready
    for slug, eta in sent.items():
        assert abs((eta - started).total_seconds() - stagger(slug, 3600)) < 5


def test_stagger_is_stable_distinct_and_inside_the_window():
    from tenant_schema.celery import for_each_tenant, stagger

    slugs = [f"tenant-{n}" for n in range(500)]
    offsets = [stagger(slug, 3600) for slug in slugs]
    assert offsets == [stagger(slug, 3600) for slug in slugs]
    assert len(set(offsets)) == len(slugs)
    assert all(0 <= offset < 3600 for offset in offsets)
    assert all(any(q * 900 <= offset < (q + 1) * 900 for offset in offsets) for q in range(4))  # spread over it
    assert stagger("acme", 3600) == pytest.approx(stagger("acme", 60) * 60)
    assert stagger("acme", 3600) == pytest.approx(1830.498149)  # every process, every release: no hash seed
    with pytest.raises(ValueError, match="window must be a positive number of seconds, not 0"):
        stagger("acme", 0)
    with pytest.raises(ValueError, match="batch_size must be a positive integer, not 0"):
        for_each_tenant("tests.celeryapp.record", batch_size=0)
    with pytest.raises(ValueError, match="spread must be a number of seconds"):
        for_each_tenant("tests.celeryapp.record", spread=-1)
    with pytest.raises(TypeError, match="takes a task, a signature or a task name, not int"):
        for_each_tenant(42)


def test_install_refuses_an_app_whose_tasks_exist_and_is_idempotent():
    from celery import Celery
    from django.core.exceptions import ImproperlyConfigured

    from tenant_schema.celery import TenantTask, install

    late = Celery("late", set_as_current=False)
    late.finalize()
    with pytest.raises(ImproperlyConfigured, match=r"right after Celery\(\.\.\.\)"):
        install(late)
    app = Celery("early", set_as_current=False)
    assert install(app) is app and install(app) is app
    assert issubclass(app.Task, TenantTask)

    @app.task
    def noop():
        return None

    assert isinstance(noop, TenantTask)
