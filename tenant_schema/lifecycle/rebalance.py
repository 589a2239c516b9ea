"""Evening out the servers: ``plan_rebalance`` and ``rebalance`` (``manage.py tenant_rebalance``).

The plan is computed from the registry alone (one query for the counts,
one per source server for its movable tenants); nothing connects to a
tenant. Each server's share of the fleet follows the placement policy:
``"weighted"`` gives a server a share proportional to its ``?weight=N``,
every other policy (``None``, ``"fewest"``, your own) an equal share.
Then, while moving one tenant from the server furthest above its share to
one below it brings the two closer, that move is planned. The rules:

- a server with ``?weight=0`` takes no new tenants, so it is never a target;
  its own tenants stay where they are too (weight 0 is "closed", not
  "drain me": move them off with ``tenant_move``);
- a tenant only goes to a server that carries every label its current
  server carries (``?labels=region:eu``): a rebalance never takes a tenant
  out of its region;
- only ready tenants move, the newest first (the smallest, typically:
  the least to copy), and none with a move in progress; archived, failed
  and half-registered tenants count towards their server's load (their
  databases take room) but stay; the copies moves keep and the targets of
  moves in progress do not count (a move's source would
  otherwise never get lighter until its copy is dropped: drop them with
  ``tenant_move <slug> --drop-source``, or rebalance with ``drop_source=True``).

``rebalance`` runs the planned moves one by one with ``move_tenant`` (each
with its guarantees: writes paused, copy verified, source kept) and stops
at the first that fails: later moves were planned assuming it happened.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from django.db.models import Count

from .. import conf
from ..models import Tenant
from ..names import MOVE_SLUG_RE, POOL_SLUG_RE
from ..placement import tenant_counts
from ..servers import Server, get_server, server_urls
from .move import MoveResult, move_tenant

__all__ = ["PlannedMove", "live_counts", "plan_rebalance", "rebalance"]


@dataclasses.dataclass(frozen=True)
class PlannedMove:
    """One move of a rebalancing plan."""

    slug: str
    source: str
    target: str


def live_counts() -> dict[str, int]:
    """Tenants per server key, as ``placement.tenant_counts`` counts them, less the rows of moves.

    A move's rows (its target while it is built and filled, the source it
    kept) carry ``copy_of``, whatever their status.
    """
    counts = tenant_counts()
    moves = Tenant.objects.filter(copy_of__isnull=False).exclude(status=Tenant.Status.POOLED)
    for row in moves.values("server").annotate(n=Count("pk")):
        counts[row["server"]] -= row["n"]
    return {key: n for key, n in counts.items() if n}


def _shares(servers: list[Server], total: int) -> dict[str, float]:
    """Each open server's share of ``total`` tenants under the placement policy."""
    if conf.get("PLACEMENT") == "weighted":
        weight = sum(s.weight for s in servers)
        return {s.key: total * s.weight / weight for s in servers}
    return {s.key: total / len(servers) for s in servers}


def _carries(target: Server, source: Server) -> bool:
    return all(target.labels.get(key) == value for key, value in source.labels.items())


def plan_rebalance(*, max_moves: int | None = None) -> list[PlannedMove]:
    """The moves that even out the open servers (weight above 0), in the order to run them."""
    if max_moves is not None and (not isinstance(max_moves, int) or isinstance(max_moves, bool) or max_moves < 0):
        raise ValueError(f"max_moves must be a whole number of moves (0 or more), not {max_moves!r}")
    servers = [get_server(key) for key in sorted(server_urls())]
    open_servers = [s for s in servers if s.weight > 0]
    if len(open_servers) < 2:
        return []
    counts = live_counts()
    load = {s.key: counts.get(s.key, 0) for s in open_servers}
    share = _shares(open_servers, sum(load.values()))
    movable: dict[str, list[str]] = {}  # server -> its ready tenants, newest last (popped first)

    moving = {
        uid
        for uid in Tenant.objects.filter(copy_of__isnull=False)
        .exclude(status=Tenant.Status.COPY)
        .values_list("copy_of", flat=True)
    }  # tenants with a move in progress (or one a crash left to finish)

    def candidates(key: str) -> list[str]:
        if key not in movable:
            rows = Tenant.objects.filter(server=key, status=Tenant.Status.READY).order_by("created_at", "pk")
            movable[key] = [
                slug
                for slug, uid in rows.values_list("slug", "uid")
                if uid not in moving and not (POOL_SLUG_RE.fullmatch(slug) or MOVE_SLUG_RE.fullmatch(slug))
            ]
        return movable[key]

    plan: list[PlannedMove] = []
    while max_moves is None or len(plan) < max_moves:
        surplus = sorted(open_servers, key=lambda s: (-(load[s.key] - share[s.key]), s.key))
        move = None
        for source in surplus:
            above = load[source.key] - share[source.key]
            targets = [
                t
                for t in reversed(surplus)
                if t.key != source.key and _carries(t, source) and above - (load[t.key] - share[t.key]) > 1 + 1e-9
            ]
            if targets and candidates(source.key):
                move = PlannedMove(candidates(source.key).pop(), source.key, targets[0].key)
                break
        if move is None:
            return plan
        plan.append(move)
        load[move.source] -= 1
        load[move.target] += 1
    return plan


def rebalance(
    plan: list[PlannedMove] | None = None,
    *,
    max_moves: int | None = None,
    on_move: Callable[[PlannedMove, MoveResult], Any] | None = None,
    **move_options: Any,
) -> list[MoveResult]:
    """Run ``plan`` (default: ``plan_rebalance(max_moves=...)``) one move at a time with ``move_tenant``.

    ``move_options`` go to each ``move_tenant`` call. Stops at the first
    move that fails, raising its error; the moves done before it are done
    (each verified, each source kept). ``on_move`` is called after each
    move with the planned move and its ``MoveResult``.
    """
    if plan is None:
        plan = plan_rebalance(max_moves=max_moves)
    results = []
    for planned in plan:
        result = move_tenant(planned.slug, planned.target, **move_options)
        results.append(result)
        if on_move is not None:
            on_move(planned, result)
    return results
