"""Where new tenants go: server labels, the placement policies, and ``tenant_servers``.

The servers here are SQLite directories of the test run (cheap to fill with
tenants) plus the live PostgreSQL and MariaDB servers and one that never
answers, each carrying labels and weights in its URL.
"""

from __future__ import annotations

import json

import pytest
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.management.base import CommandError

from tenant_schema.exceptions import UnknownServer
from tenant_schema.models import Tenant
from tenant_schema.placement import choose_server, fewest, tenant_counts, weighted
from tenant_schema.servers import get_server, parse_server
from tests.tenantapp.helpers import run_command

from .conftest import require_server

pytestmark = pytest.mark.django_db(transaction=True)


#: The test run's SQLite server URL, before any test overrides the servers.
SQLITE = settings.TENANT_SCHEMA["SERVERS"]["sqlite"].rstrip("/")


def placed(policy=None, **servers: str):
    """``TENANT_SCHEMA`` with these servers (URL suffixes on a fresh SQLite directory each) and ``policy``."""
    urls = {key: f"{SQLITE}/{key}/{suffix}" for key, suffix in servers.items()}
    return {
        **settings.TENANT_SCHEMA,
        "SERVERS": urls,
        "DEFAULT_SERVER": next(iter(urls)),
        "PLACEMENT": policy,
    }


def fill(server: str, count: int, status: str = Tenant.Status.READY) -> None:
    """Registry rows on ``server`` (counting needs rows, not databases)."""
    for n in range(count):
        slug = f"fill-{server}-{status}-{n}"
        Tenant.objects.create(slug=slug, server=server, database_name=slug.replace("-", "_"), status=status)


def test_labels_and_weight_come_from_the_url():
    server = parse_server("eu", "postgres://postgres@127.0.0.1:5432/?labels=region:eu,tier:gold&weight=3")
    assert (server.labels, server.weight) == ({"region": "eu", "tier": "gold"}, 3)
    assert "labels" not in server.settings["OPTIONS"] and "weight" not in server.settings["OPTIONS"]
    assert parse_server("plain", "sqlite:////tmp/x/").labels == {}
    for url, message in [
        ("sqlite:////tmp/x/?labels=region", "'region' is not name:value"),
        ("sqlite:////tmp/x/?labels=Region:EU", "'Region' is not a label name or value"),
        ("sqlite:////tmp/x/?labels=region:eu,region:us", "'region' is given twice"),
        ("sqlite:////tmp/x/?weight=-1", "weight must be a whole number from 0"),
    ]:
        with pytest.raises(ImproperlyConfigured, match=message):
            parse_server("bad", url)


def test_without_a_policy_new_tenants_go_to_the_default_server(settings):
    settings.TENANT_SCHEMA = placed(None, a="", b="?labels=region:eu")
    fill("a", 3)
    assert choose_server().key == "a"
    assert choose_server(labels={"region": "eu"}).key == "b", "labels narrow the candidates even without a policy"


def test_fewest_takes_the_emptiest_candidate(settings):
    settings.TENANT_SCHEMA = placed("fewest", a="", b="", c="")
    fill("a", 2)
    fill("b", 1)
    fill("c", 1, Tenant.Status.ARCHIVED)  # an archived tenant's database still takes room
    fill("b", 5, Tenant.Status.POOLED)  # pooled databases are nobody's tenants
    assert tenant_counts() == {"a": 2, "b": 1, "c": 1}
    assert choose_server().key == "b"  # b and c tie at one: the first by key


def test_weighted_fills_servers_in_proportion_to_their_weight(settings):
    settings.TENANT_SCHEMA = placed("weighted", small="?weight=1", big="?weight=3", closed="?weight=0")
    picks = []
    for n in range(8):
        key = choose_server().key
        picks.append(key)
        Tenant.objects.create(slug=f"w-{n}", server=key, database_name=f"w_{n}", status=Tenant.Status.READY)
    assert picks.count("big") == 6 and picks.count("small") == 2 and "closed" not in picks


def test_a_required_label_no_server_carries_is_one_clear_error(settings):
    settings.TENANT_SCHEMA = placed("fewest", a="?labels=region:us", b="")
    with pytest.raises(
        UnknownServer, match=r"no tenant server carries the labels region=eu \(a: region=us; b: no labels\)"
    ):
        choose_server(labels={"region": "eu"})
    with pytest.raises(UnknownServer, match="tenant server 'b' does not carry the labels region=us"):
        choose_server("b", labels="region:us")
    assert choose_server("a", labels="region=us").key == "a"


def pick_last(candidates, *, counts, labels):
    """A site's own policy: the last candidate by key."""
    return candidates[-1]


def pick_elsewhere(candidates, *, counts, labels):
    from tenant_schema.servers import get_server

    return get_server("outside")


def test_a_sites_own_policy_is_a_dotted_path_and_must_pick_a_candidate(settings):
    settings.TENANT_SCHEMA = placed("tests.test_placement.pick_last", a="", b="", c="?labels=tier:gold")
    assert choose_server().key == "c"
    assert choose_server(labels={"tier": "gold"}).key == "c"
    settings.TENANT_SCHEMA = placed("tests.test_placement.pick_elsewhere", a="?labels=tier:gold", outside="")
    with pytest.raises(ImproperlyConfigured, match="not one of the candidate servers"):
        choose_server(labels={"tier": "gold"})
    settings.TENANT_SCHEMA = placed("no.such.policy", a="")
    with pytest.raises(ImproperlyConfigured, match='PLACEMENT"] must be None, "fewest", "weighted" or a dotted path'):
        choose_server()


def test_policies_are_plain_functions_of_candidates_and_counts():
    small, big = parse_server("small", "sqlite:////tmp/s/?weight=1"), parse_server("big", "sqlite:////tmp/b/?weight=4")
    assert fewest([small, big], counts={"small": 1, "big": 3}, labels={}).key == "small"
    assert weighted([small, big], counts={"small": 1, "big": 3}, labels={}).key == "big"  # 2/1 vs 4/4


def test_tenant_servers_lists_counts_pools_labels_and_who_answers(settings, db_access):
    require_server("pg")
    require_server("mysql")
    settings.TENANT_SCHEMA = {
        **settings.TENANT_SCHEMA,
        "SERVERS": {
            "local": f"{SQLITE}/local/?labels=region:eu",
            "pg": settings.TENANT_SCHEMA["SERVERS"]["pg"] + "?labels=region:us&weight=2&pool=3",
            "mysql": settings.TENANT_SCHEMA["SERVERS"]["mysql"],
            "gone": "postgres://postgres@127.0.0.1:1/",  # nothing listens on port 1
        },
        "DEFAULT_SERVER": "local",
    }
    get_server("local").path.parent.mkdir(parents=True, exist_ok=True)  # not "local" itself: made on first use
    fill("local", 2)
    fill("local", 1, Tenant.Status.ARCHIVED)
    fill("pg", 2, Tenant.Status.POOLED)
    out, err = run_command("tenant_servers", "--json")
    rows = {row["server"]: row for row in json.loads(out)}
    assert rows["local"] | {"url": None} == {
        "server": "local",
        "url": None,
        "dialect": "sqlite",
        "isolation": "database",
        "labels": {"region": "eu"},
        "weight": 1,
        "tenants": 3,
        "by_status": {"archived": 1, "ready": 2},
        "pool": {"target": 0, "pooled": 0},
        "reachable": True,
        "problem": None,
    }
    assert (rows["pg"]["tenants"], rows["pg"]["pool"], rows["pg"]["reachable"]) == (0, {"target": 3, "pooled": 2}, True)
    assert rows["pg"]["labels"] == {"region": "us"} and rows["pg"]["weight"] == 2
    assert rows["mysql"]["reachable"] is True
    assert rows["gone"]["reachable"] is False and "1" in rows["gone"]["problem"]

    out, err = run_command("tenant_servers")
    header, *lines = out.splitlines()
    assert header.split() == ["server", "dialect", "isolation", "labels", "weight", "tenants", "pool", "reachable"]
    assert ["pg", "postgres", "database", "region=us", "2", "0", "2/3", "yes"] in [line.split() for line in lines]
    assert err.startswith("gone: ")
    with pytest.raises(CommandError, match="--timeout must be a positive number"):
        run_command("tenant_servers", "--timeout", "0")


def test_registration_follows_the_policy_and_the_labels(settings):
    from tenant_schema import purge_tenant, register_tenant

    settings.TENANT_SCHEMA = placed("fewest", eu1="?labels=region:eu", eu2="?labels=region:eu", us="?labels=region:us")
    made = []
    try:
        for n in range(4):
            made.append(register_tenant(f"placed-{n}", labels={"region": "eu"}))
        assert sorted(t.server for t in made) == ["eu1", "eu1", "eu2", "eu2"]
        assert all(t.status == Tenant.Status.READY for t in made)
        made.append(register_tenant("placed-us", labels="region:us"))
        assert made[-1].server == "us"
        again = register_tenant("placed-0", labels={"region": "eu"})  # registered: it stays where it is
        assert again.server == made[0].server
        with pytest.raises(UnknownServer, match="does not carry the labels region=us"):
            register_tenant("placed-0", labels={"region": "us"})
        with pytest.raises(ValueError, match="'EU' is not a label name or value"):
            register_tenant("placed-bad", labels={"region": "EU"})
        with pytest.raises(UnknownServer, match="carries the labels region=ap"):
            register_tenant("placed-ap", labels={"region": "ap"})
        assert not Tenant.objects.filter(slug__in=["placed-bad", "placed-ap"]).exists(), "nothing was created"

        out, _ = run_command("tenant_register", "placed-cmd", "--label", "region=us")
        assert "on server 'us'" in out
        made.append(Tenant.objects.get(slug="placed-cmd"))
        with pytest.raises(CommandError, match="^no tenant server carries the labels region=ap"):
            run_command("tenant_register", "placed-cmd2", "--label", "region=ap")
    finally:
        for tenant in made:
            tenant.database.close()
            purge_tenant(tenant.slug)


def test_tenant_servers_runs_from_the_command_line_and_never_waits_past_its_timeout(tmp_path):
    """A server that accepts connections and never answers: the listing still ends, within --timeout."""
    import os
    import socket
    import subprocess
    import sys
    import time

    from .test_commands import ROOT

    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)  # accepts (the kernel does), never speaks
    port = silent.getsockname()[1]
    settings_module = tmp_path / "silent_settings.py"
    settings_module.write_text(
        "from tests.settings import *  # noqa: F403\n"
        f"TENANT_SCHEMA = {{**TENANT_SCHEMA, 'SERVERS': {{'default': TENANT_SCHEMA['SERVERS']['sqlite'], "
        f"'silent': 'postgres://postgres@127.0.0.1:{port}/'}}}}\n"
    )
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "silent_settings",
        "PYTHONPATH": f"{tmp_path}:{ROOT}",
        "TENANT_SCHEMA_REGISTRY_URL": f"sqlite:///{tmp_path}/registry.sqlite3",
    }
    subprocess.run([sys.executable, "-m", "django", "migrate", "-v", "0"], cwd=ROOT, env=env, check=True)
    started = time.monotonic()
    try:
        result = subprocess.run(
            [sys.executable, "-m", "django", "tenant_servers", "--json", "--timeout", "2"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        silent.close()
    assert result.returncode == 0, result.stderr  # system checks ran: the command does not shadow them
    rows = {row["server"]: row for row in json.loads(result.stdout)}
    assert rows["silent"]["reachable"] is False and rows["silent"]["problem"] == "no answer within 2 s"
    assert rows["default"]["reachable"] is True
    assert time.monotonic() - started < 30, "the process exited, not held by the probe thread"


def test_weight_zero_takes_no_new_tenants_under_any_policy_but_can_be_named(settings):
    for policy in (None, "fewest", "weighted"):
        settings.TENANT_SCHEMA = placed(policy, draining="?weight=0", open="")
        settings.TENANT_SCHEMA["DEFAULT_SERVER"] = "draining"
        assert choose_server().key == "open", policy
        assert choose_server("draining").key == "draining"
    settings.TENANT_SCHEMA = placed("fewest", draining="?weight=0")
    with pytest.raises(UnknownServer, match=r"no tenant server takes new tenants \(draining: no labels, weight 0\)"):
        choose_server()


def test_a_placement_setting_that_names_nothing_fails_the_system_checks(settings):
    from django.core.checks import run_checks

    settings.TENANT_SCHEMA = {**settings.TENANT_SCHEMA, "PLACEMENT": "fewst"}
    found = {e.id: e.msg for e in run_checks(tags=["tenant_schema"])}
    assert "PLACEMENT" in found["tenant_schema.E013"]


def test_labels_may_be_any_mapping():
    from types import MappingProxyType

    from tenant_schema.servers import parse_labels

    assert parse_labels(MappingProxyType({"region": "eu"}), "labels") == {"region": "eu"}


def test_an_import_follows_the_labels(settings, tmp_path):
    """tenant_import --label region=eu puts the new tenant on a server carrying it, as tenant_register does."""
    from tenant_schema import export_tenant, purge_tenant, register_tenant

    settings.TENANT_SCHEMA = placed("fewest", us="?labels=region:us", eu="?labels=region:eu")
    made = [register_tenant("placed-source", server="us")]
    try:
        path = tmp_path / "source.zip"
        export_tenant("placed-source", path)
        out, _ = run_command(
            "tenant_import", str(path), "--slug", "placed-copy", "--label", "region=eu", "--no-progress"
        )
        made.append(Tenant.objects.get(slug="placed-copy"))
        assert made[-1].server == "eu" and "on 'eu'" in out
        with pytest.raises(CommandError, match="^no tenant server carries the labels region=ap"):
            run_command("tenant_import", str(path), "--slug", "placed-ap", "--label", "region=ap", "--no-progress")
        assert not Tenant.objects.filter(slug="placed-ap").exists(), "nothing was created"
    finally:
        for tenant in made:
            purge_tenant(tenant)
