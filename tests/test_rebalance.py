"""Evening out the servers: the plan from the registry alone, and the moves it runs."""

from __future__ import annotations

import json

import pytest
from django.core.management.base import CommandError

from tenant_schema.lifecycle.move import kept_copies
from tenant_schema.lifecycle.rebalance import PlannedMove, live_counts, plan_rebalance
from tenant_schema.lifecycle.register import register_tenant
from tenant_schema.models import Tenant
from tests.tenantapp.helpers import run_command
from tests.test_placement import fill, placed

pytestmark = pytest.mark.django_db(transaction=True)


def loads(plan: list[PlannedMove], start: dict[str, int]) -> dict[str, int]:
    after = dict(start)
    for move in plan:
        after[move.source] -= 1
        after[move.target] += 1
    return after


def test_an_equal_share_for_every_open_server_newest_tenants_first(settings):
    settings.TENANT_SCHEMA = placed("fewest", a="", b="", c="")
    fill("a", 7)
    plan = plan_rebalance()
    assert loads(plan, {"a": 7, "b": 0, "c": 0}) == {"a": 3, "b": 2, "c": 2}
    assert [m.slug for m in plan] == [f"fill-a-ready-{n}" for n in (6, 5, 4, 3)], "newest first"
    assert {m.source for m in plan} == {"a"}
    assert plan_rebalance(max_moves=1) == plan[:1]
    with pytest.raises(ValueError, match="max_moves must be"):
        plan_rebalance(max_moves=-1)


def test_weighted_shares_follow_the_weights(settings):
    settings.TENANT_SCHEMA = placed("weighted", a="?weight=1", b="?weight=3")
    fill("a", 8)
    assert loads(plan_rebalance(), {"a": 8, "b": 0}) == {"a": 2, "b": 6}


def test_a_tenant_never_leaves_its_servers_labels_and_closed_servers_are_left_alone(settings):
    settings.TENANT_SCHEMA = placed(
        "fewest", eu1="?labels=region:eu", eu2="?labels=region:eu,tier:gold", us="?labels=region:us", shut="?weight=0"
    )
    fill("eu1", 6)
    fill("shut", 5)
    plan = plan_rebalance()
    assert {(m.source, m.target) for m in plan} == {("eu1", "eu2")}, "never to us, never to or from shut"
    assert loads(plan, {"eu1": 6, "eu2": 0, "us": 0, "shut": 5})["eu1"] == 3


def test_copies_and_archived_tenants_count_but_only_ready_tenants_move(settings):
    settings.TENANT_SCHEMA = placed("fewest", a="", b="")
    fill("a", 4, status=Tenant.Status.ARCHIVED)
    fill("b", 1)
    assert plan_rebalance() == [], "a holds 4 databases, b 1: nothing on a can move, moving b's makes it worse"
    fill("a", 2)
    assert loads(plan_rebalance(), {"a": 6, "b": 1}) == {"a": 4, "b": 3}


def test_moves_in_progress_neither_count_nor_move_again(settings):
    settings.TENANT_SCHEMA = placed("fewest", a="", b="")
    fill("a", 4)
    busy = Tenant.objects.get(slug="fill-a-ready-3")  # the newest: the first the plan would take
    for n, status in enumerate([Tenant.Status.PROVISIONING, Tenant.Status.MOVING, Tenant.Status.FAILED]):
        Tenant.objects.create(
            slug=f"move-{n:016x}", server="b", database_name=f"move_{n}", status=status, copy_of=busy.uid
        )
    assert live_counts() == {"a": 4}
    plan = plan_rebalance()
    assert busy.slug not in {m.slug for m in plan}
    assert loads(plan, {"a": 4, "b": 0}) == {"a": 2, "b": 2}


def test_the_command_prints_the_plan_and_json_without_moving(settings):
    settings.TENANT_SCHEMA = placed("fewest", a="", b="")
    fill("a", 3)
    out = run_command("tenant_rebalance", "--dry-run")[0]
    assert "fill-a-ready-2: a -> b" in out and "1 move planned (dry run: nothing moved)." in out
    data = json.loads(run_command("tenant_rebalance", "--dry-run", "--json")[0])
    assert data == {
        "dry_run": True,
        "moves": [{"tenant": "fill-a-ready-2", "from": "a", "to": "b"}],
        "load": {"a": 3},
    }
    assert Tenant.objects.get(slug="fill-a-ready-2").server == "a"
    with pytest.raises(CommandError, match="--max-moves must be 0 or more"):
        run_command("tenant_rebalance", "--max-moves", "-2")
    settings.TENANT_SCHEMA = placed("fewest", a="")
    assert "nothing to move" in run_command("tenant_rebalance")[0]


def test_the_command_moves_tenants_and_keeps_each_source(settings):
    settings.TENANT_SCHEMA = {**placed("fewest", a="", b=""), "ROUTING_CACHE_SECONDS": 0}
    tenants = [register_tenant(f"rebal-{n}", server="a") for n in range(3)]
    out, err = run_command("tenant_rebalance")
    assert "rebal-2: a -> b" in out and "1 move done; each source kept as a copy" in out
    moved = Tenant.objects.get(slug="rebal-2")
    assert moved.server == "b" and moved.uid == tenants[2].uid
    assert [copy.server for copy in kept_copies("rebal-2")] == ["a"]
    assert "nothing to move" in run_command("tenant_rebalance")[0], "a kept copy is not load"
    register_tenant("rebal-3", server="a")
    register_tenant("rebal-4", server="a")
    out, err = run_command("tenant_rebalance", "--drop-source")
    assert "rebal-4: a -> b" in out and "each source dropped" in out
    assert kept_copies("rebal-4") == []
