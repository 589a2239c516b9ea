"""The example project, end to end: ``manage.py demo`` sets it up and serves it,
and each tenant's subdomain shows that tenant's rows and no other's.

It runs the real thing in subprocesses (the example site has its own
settings), on SQLite files and, through ``TENANT_SCHEMA_DEMO_SERVER``, on the
live PostgreSQL and MariaDB servers.
"""

from __future__ import annotations

import http.client
import os
import re
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from django.conf import settings

from .conftest import LIVE_SERVERS, require_server

ROOT = Path(__file__).resolve().parent.parent
MANAGE = ROOT / "example_project" / "manage.py"
STARTUP_LIMIT = 60  # seconds to wait for runserver to listen; not an assertion


def demo_env(server_key: str, var_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    env["TENANT_SCHEMA_DEMO_DIR"] = str(var_dir)
    env["TENANT_SCHEMA_DEMO_PREFIX"] = f"ex{uuid.uuid4().hex[:8]}_"
    if server_key == "sqlite":
        env.pop("TENANT_SCHEMA_DEMO_SERVER", None)  # the default: SQLite files in var_dir
    else:
        env["TENANT_SCHEMA_DEMO_SERVER"] = settings.TENANT_SCHEMA["SERVERS"][server_key]
    return env


def manage(env: dict[str, str], *args: str) -> str:
    result = subprocess.run(
        [sys.executable, str(MANAGE), *args], env=env, cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, f"manage.py {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Site:
    """HTTP to the demo server on loopback, with the tenant chosen by the Host header."""

    def __init__(self, port: int) -> None:
        self.port = port

    def request(
        self,
        host: str,
        method: str = "GET",
        path: str = "/",
        body: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, str, http.client.HTTPMessage]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            conn.request(method, path, body=body, headers={"Host": f"{host}:{self.port}", **(headers or {})})
            response = conn.getresponse()
            return response.status, response.read().decode(), response.headers
        finally:
            conn.close()

    def page(self, host: str) -> str:
        status, text, _ = self.request(host)
        assert status == 200, f"{host}: HTTP {status}\n{text[:2000]}"
        return text

    def add_transaction(self, host: str, description: str, receipt: bytes | None = None) -> str:
        """Submit the dashboard's form as a browser would (CSRF cookie and token, multipart); the redirect."""
        _, text, headers = self.request(host)
        cookie = re.search(r"csrftoken=([^;]+)", headers.get("Set-Cookie", "")).group(1)
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', text).group(1)
        account = re.search(r'name="account".*?<option value="(\d+)"', text, re.S).group(1)
        fields = {
            "csrfmiddlewaretoken": token,
            "account": account,
            "date": "2025-02-01",
            "description": description,
            "amount": "-12.50",
            "category": "test",
        }
        boundary = uuid.uuid4().hex
        parts = [
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'
            for name, value in fields.items()
        ]
        if receipt is not None:
            parts.append(
                f'--{boundary}\r\nContent-Disposition: form-data; name="receipt"; filename="receipt.txt"\r\n'
                f"Content-Type: text/plain\r\n\r\n{receipt.decode()}\r\n"
            )
        body = "".join(parts) + f"--{boundary}--\r\n"
        status, text, headers = self.request(
            host,
            "POST",
            "/transactions/new/",
            body,
            {"Content-Type": f"multipart/form-data; boundary={boundary}", "Cookie": f"csrftoken={cookie}"},
        )
        assert status == 302, f"adding a transaction to {host}: HTTP {status}\n{text[:2000]}"
        return headers["Location"]


def total(page: str) -> str:
    return re.search(r'id="total">([^<]+)<', page).group(1)


def purge_demo_tenants(env: dict[str, str]) -> None:
    for slug in ("acme", "globex"):
        subprocess.run(
            [sys.executable, str(MANAGE), "tenant_drop", slug, "--purge", "--noinput"],
            env=env,
            cwd=ROOT,
            capture_output=True,
            check=False,
        )


def wait_until_listening(process: subprocess.Popen, port: int, log: Path) -> None:
    deadline = time.monotonic() + STARTUP_LIMIT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"the demo server exited with {process.returncode}:\n{log.read_text()}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.2)
    pytest.fail(f"the demo server did not listen on {port} within {STARTUP_LIMIT}s:\n{log.read_text()}")


@pytest.mark.parametrize("server_key", LIVE_SERVERS)
def test_demo_tenants_each_see_only_their_own_rows(server_key, tmp_path, db_access):
    require_server(server_key)
    env = demo_env(server_key, tmp_path / "var")
    port = free_port()
    log = tmp_path / "server.log"
    process = None
    try:
        first = manage(env, "demo", "--no-serve")
        assert "tenant acme: ready" in first and "tenant globex: ready" in first
        assert "No Celery broker configured (CELERY_BROKER_URL is unset): tasks run in-process" in first
        assert "balances recalculated in-process" in first
        assert "user 'admin', password 'admin'" in first
        second = manage(env, "demo", "--no-serve")
        assert "tenant acme: ready" in second and "0 rows added" in second, "set-up is idempotent"

        with log.open("w") as out:
            process = subprocess.Popen(
                [sys.executable, str(MANAGE), "demo", f"127.0.0.1:{port}"],
                env=env,
                cwd=ROOT,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        wait_until_listening(process, port, log)
        site = Site(port)

        acme, globex = site.page("acme.localhost"), site.page("globex.localhost")
        for mine in ("Acme Checking", "Acme Savings", "Salary", "Groceries"):
            assert mine in acme and mine not in globex
        for mine in ("Globex Current", "Globex Card", "Pension", "Train tickets"):
            assert mine in globex and mine not in acme

        # Each tenant's total comes from the cache, under its own key: never the other's.
        assert (total(acme), total(globex)) == ("3117.60", "2596.95")
        assert "2617.60" in acme and "never" not in acme, "the task stored the balances"

        location = site.add_transaction("acme.localhost", "Written-by-test", receipt=b"paid in cash")
        assert "recalculated+in-process" in location
        acme, globex = site.page("acme.localhost"), site.page("globex.localhost")
        assert "Written-by-test" in acme and "Written-by-test" not in globex
        assert (total(acme), total(globex)) == ("3105.10", "2596.95"), "the task forgot acme's cached total only"
        assert "2605.10" in acme
        receipt_url = re.search(r'class="receipt" href="([^"]+)"', acme).group(1)
        assert 'class="receipt"' not in globex
        status, content, _ = site.request("acme.localhost", path=receipt_url)
        assert (status, content) == (200, "paid in cash")
        (stored,) = (tmp_path / "var" / "media").glob("acme-*/receipts/receipt*.txt")
        assert stored.read_text() == "paid in cash", "under acme's own media directory"

        landing = site.page("localhost")
        assert "acme.localhost" in landing and "globex.localhost" in landing
        status, _, _ = site.request("initech.localhost")
        assert status == 404, "an unknown tenant is not found, never someone else's data"
    finally:
        if process is not None:
            process.terminate()
            process.wait(timeout=30)
        purge_demo_tenants(env)


def test_demo_task_runs_on_a_celery_worker_in_each_tenant(tmp_path, db_access):
    """With a broker, the demo queues each tenant's "recalculate balances" task; a real worker runs it there."""
    from .conftest import require_redis

    require_server("sqlite")
    env = demo_env("sqlite", tmp_path / "var")
    env["CELERY_BROKER_URL"] = require_redis() + "/6"
    queue = f"demo-{uuid.uuid4().hex[:8]}"
    env["CELERY_TASK_DEFAULT_QUEUE"] = queue
    log = tmp_path / "worker.log"
    worker = None
    try:
        out = manage(env, "demo", "--no-serve")
        assert "Celery broker configured" in out and "balances queued for the Celery worker" in out
        assert "never" in balances_as_of(env, "acme"), "nothing ran the task yet"
        with log.open("w") as stream:
            worker = subprocess.Popen(
                [sys.executable, "-m", "celery", "-A", "finance_site", "worker", "--pool=solo", "-Q", queue],
                env=env,
                cwd=ROOT / "example_project",
                stdout=stream,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if all("never" not in balances_as_of(env, slug) for slug in ("acme", "globex")):
                break
            assert worker.poll() is None, log.read_text()
            time.sleep(0.5)
        else:
            pytest.fail(f"the worker did not recalculate both tenants' balances:\n{log.read_text()}")
        assert "2617.60" in balances_as_of(env, "acme") and "2703.85" in balances_as_of(env, "globex")
        cached = manage(
            env,
            "tenant_command",
            "shell",
            "-c",
            "from django.conf import settings; print(settings.CACHES)",
            "--tenant",
            "acme",
        )
        assert "RedisCache" in cached, "web and worker share the cache the task clears"
    finally:
        if worker is not None:
            worker.terminate()
            try:
                worker.wait(timeout=30)
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait(timeout=30)
        purge_demo_tenants(env)


def balances_as_of(env: dict[str, str], slug: str) -> str:
    """The tenant's stored balances and when they were computed ("never" before the task ran)."""
    code = (
        "from finance.models import Account;"
        "print([(a.name, str(a.balance), a.balance_updated_at or 'never') for a in Account.objects.all()])"
    )
    return manage(env, "tenant_command", "shell", "-c", code, "--tenant", slug)
