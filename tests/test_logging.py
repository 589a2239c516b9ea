"""tenant_schema.logging: ``%(tenant)s`` on every log line, set up the way a site does it (``LOGGING``)."""

from __future__ import annotations

import asyncio
import io
import logging
import logging.config
import logging.handlers
import queue
import threading
import uuid

import pytest

from tenant_schema import tenant_context
from tenant_schema.logging import TenantContextFilter

in_registry = pytest.mark.django_db(transaction=True)


def logging_settings(logger_name: str, stream: io.StringIO) -> dict:
    """A ``LOGGING`` dict: one handler with the filter, writing ``<tenant> <message>`` lines to ``stream``."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"tenant": {"()": "tenant_schema.logging.TenantContextFilter"}},
        "formatters": {"tenant": {"format": "%(tenant)s %(message)s"}},
        "handlers": {
            "lines": {
                "class": "logging.StreamHandler",
                "stream": stream,
                "filters": ["tenant"],
                "formatter": "tenant",
            }
        },
        "loggers": {logger_name: {"handlers": ["lines"], "level": "INFO", "propagate": False}},
    }


@pytest.fixture
def log():
    """A logger configured by ``dictConfig``; ``log.lines()`` are the lines it wrote so far."""
    name = f"tests.tenant_logging.{uuid.uuid4().hex[:8]}"
    stream = io.StringIO()
    logging.config.dictConfig(logging_settings(name, stream))
    logger = logging.getLogger(name)
    logger.lines = lambda: stream.getvalue().splitlines()
    yield logger
    for handler in logger.handlers[:]:
        logger.removeHandler(handler)
        handler.close()


@pytest.fixture
def two_tenants(tenant_factory):
    return tenant_factory(), tenant_factory()


@in_registry
def test_records_inside_and_outside_tenant_context(log, two_tenants):
    a, b = two_tenants
    log.info("before")
    with tenant_context(a.slug):
        log.info("in a")
        with tenant_context(b):
            log.warning("nested in b")
        log.info("back in a")
    log.info("after")
    assert log.lines() == ["- before", f"{a.slug} in a", f"{b.slug} nested in b", f"{a.slug} back in a", "- after"]


@in_registry
def test_the_filter_reads_no_database(log, two_tenants, django_db_blocker):
    a, _ = two_tenants
    with django_db_blocker.block():  # any query would raise
        with tenant_context(a):  # a Tenant row: selecting it runs no query either
            log.info("no query")
        log.info("none either")
    assert log.lines() == [f"{a.slug} no query", "- none either"]


@in_registry
def test_threads_log_their_own_tenant(log, two_tenants):
    a, b = two_tenants
    both_in = threading.Barrier(2)

    def work(tenant):
        with tenant_context(tenant):
            both_in.wait(timeout=10)  # both tenants are selected at once, in two threads
            log.info("working")

    with tenant_context(a):  # a new thread does not inherit it
        plain = threading.Thread(target=log.info, args=("plain thread",))
        plain.start()
        plain.join()
    threads = [threading.Thread(target=work, args=(tenant,)) for tenant in (a, b)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    lines = log.lines()
    assert lines[0] == "- plain thread"
    assert sorted(lines[1:]) == sorted([f"{a.slug} working", f"{b.slug} working"])


@in_registry
async def test_async_tasks_log_their_own_tenant(log, two_tenants):
    a, b = two_tenants

    async def work(tenant, step):
        async with tenant_context(tenant):
            log.info("start %s", step)
            await asyncio.sleep(0)  # the other tasks log in between, each in its tenant
            log.info("end %s", step)

    await asyncio.gather(work(a, 1), work(b, 2), work(a, 3))
    lines = log.lines()
    assert sorted(lines) == sorted(
        [f"{t.slug} {when} {step}" for t, step in ((a, 1), (b, 2), (a, 3)) for when in ("start", "end")]
    )
    assert lines[:3] == [f"{a.slug} start 1", f"{b.slug} start 2", f"{a.slug} start 3"]  # they did interleave

    async with tenant_context(b.slug):
        task = asyncio.create_task(asyncio.to_thread(log.info, "in a task's thread"))  # both inherit the tenant
    await task
    log.info("outside")
    assert log.lines()[-2:] == [f"{b.slug} in a task's thread", "- outside"]


@in_registry
def test_a_tenant_already_on_the_record_is_kept(two_tenants):
    """A ``QueueListener`` formats records in its own thread, where no tenant is selected."""
    a, _ = two_tenants
    stream = io.StringIO()
    target = logging.StreamHandler(stream)
    target.setFormatter(logging.Formatter("%(tenant)s %(message)s"))
    target.addFilter(TenantContextFilter())  # on the listener's side too: it must not overwrite
    records: queue.Queue = queue.Queue()
    handler = logging.handlers.QueueHandler(records)
    handler.addFilter(TenantContextFilter())  # in the thread that logs
    logger = logging.getLogger(f"tests.tenant_logging.{uuid.uuid4().hex[:8]}")
    logger.propagate = False
    logger.addHandler(handler)
    listener = logging.handlers.QueueListener(records, target, respect_handler_level=True)
    listener.start()
    try:
        with tenant_context(a):
            logger.warning("queued")
            logger.warning("told", extra={"tenant": "given"})
    finally:
        listener.stop()
        logger.removeHandler(handler)
    assert stream.getvalue().splitlines() == [f"{a.slug} queued", "given told"]


def test_a_named_filter_passes_only_its_loggers_records():
    """Like ``logging.Filter(name)``; unnamed, it drops nothing."""
    record = logging.LogRecord("other", logging.INFO, __file__, 1, "m", None, None)
    assert TenantContextFilter("myapp").filter(record) is False
    assert record.tenant == "-"
    assert TenantContextFilter().filter(record) is True
    record = logging.LogRecord("myapp.views", logging.INFO, __file__, 1, "m", None, None)
    assert TenantContextFilter("myapp").filter(record) is True
