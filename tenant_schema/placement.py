"""Which server a new tenant goes to: labels it requires, then the placement policy.

``register_tenant(slug)`` without ``server=`` asks ``choose_server``:

1. the candidates are the configured servers with a weight above 0
   (``?weight=0`` takes no new tenants, under any policy; naming it
   explicitly still works) carrying every label the
   tenant requires (``labels={"region": "eu"}``, ``tenant_register --label
   region=eu``; a server's labels come from its URL, ``?labels=region:eu``).
   None carrying them is ``UnknownServer``, naming the labels each server has;
2. ``TENANT_SCHEMA["PLACEMENT"]`` picks one of them. ``None`` (the
   default) keeps ``DEFAULT_SERVER`` when it is a candidate, else the first
   candidate by key; ``"fewest"`` takes the candidate holding the fewest
   tenants; ``"weighted"`` the one whose tenants per unit of ``?weight=N``
   are fewest (a weight-2 server takes twice the tenants of a weight-1 one);
   a dotted path names your own policy, a callable
   ``policy(candidates, *, counts, labels) -> Server``.

Counts come from one registry query (tenants of every status but pooled:
an archived tenant's database, and a copy ``tenant_move`` kept, still take
room). Two sign-ups at the same
moment may both pick the server that was emptiest: placement evens servers
out over many sign-ups, it is not a lock.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from django.core.exceptions import ImproperlyConfigured
from django.db.models import Count
from django.utils.module_loading import import_string

from . import conf
from .exceptions import UnknownServer
from .registry import tenant_model
from .servers import Server, get_server, parse_labels, server_urls

Policy = Callable[..., Server]
BUILT_IN = ("fewest", "weighted")


def tenant_counts() -> dict[str, int]:
    """Tenants per server key (every status but pooled), in one registry query."""
    Tenant = tenant_model()
    rows = Tenant.objects.exclude(status=Tenant.Status.POOLED).values("server").annotate(n=Count("pk"))
    return {row["server"]: row["n"] for row in rows}


def fewest(candidates: Sequence[Server], *, counts: Mapping[str, int], labels: Mapping[str, str]) -> Server:
    """The candidate holding the fewest tenants (ties: the first by key)."""
    return min(candidates, key=lambda server: (counts.get(server.key, 0), server.key))


def weighted(candidates: Sequence[Server], *, counts: Mapping[str, int], labels: Mapping[str, str]) -> Server:
    """The candidate with the fewest tenants per unit of weight, counting the new one."""
    return min(candidates, key=lambda server: ((counts.get(server.key, 0) + 1) / max(server.weight, 1), server.key))


def get_policy() -> Policy | None:
    """``TENANT_SCHEMA["PLACEMENT"]`` as a callable; ``None`` for the default (``DEFAULT_SERVER``)."""
    setting = conf.get("PLACEMENT")
    if setting is None:
        return None
    if setting == "fewest":
        return fewest
    if setting == "weighted":
        return weighted
    if callable(setting):
        return setting
    if isinstance(setting, str):
        try:
            return import_string(setting)
        except ImportError as exc:
            raise ImproperlyConfigured(
                f'TENANT_SCHEMA["PLACEMENT"] must be None, "fewest", "weighted" or a dotted path to a '
                f"policy function: {exc}"
            ) from None
    raise ImproperlyConfigured(
        f'TENANT_SCHEMA["PLACEMENT"] must be None, "fewest", "weighted" or a dotted path, not {setting!r}'
    )


def candidates(labels: Mapping[str, str]) -> list[Server]:
    """The configured servers taking new tenants (weight above 0) and carrying every one of ``labels``, by key."""
    servers = [get_server(key) for key in sorted(server_urls())]
    return [
        server for server in servers if server.weight > 0 and all(server.labels.get(k) == v for k, v in labels.items())
    ]


def choose_server(server: str | None = None, labels: Mapping[str, str] | str | None = None) -> Server:
    """The server a new tenant goes to: ``server`` if given (it must carry ``labels``), else by policy."""
    try:
        wanted = parse_labels(labels or {}, "tenant labels")
    except ImproperlyConfigured as exc:  # the caller's input, not the site's configuration
        raise ValueError(str(exc)) from None
    if server is not None:
        chosen = get_server(server)
        missing = {k: v for k, v in wanted.items() if chosen.labels.get(k) != v}
        if missing:
            raise UnknownServer(
                f"tenant server {chosen.key!r} does not carry the labels {_show(missing)} the tenant requires "
                f"(it has {_show(chosen.labels) or 'no labels'})"
            )
        return chosen
    policy = get_policy()
    if policy is None and not wanted and get_server().weight > 0:
        return get_server()
    found = candidates(wanted)
    if not found:
        have = "; ".join(
            f"{key}: {_show(get_server(key).labels) or 'no labels'}"
            + (", weight 0" if get_server(key).weight == 0 else "")
            for key in sorted(server_urls())
        )
        wanted_text = f"carries the labels {_show(wanted)}" if wanted else "takes new tenants"
        raise UnknownServer(f"no tenant server {wanted_text} ({have})")
    if policy is None:
        default = conf.get("DEFAULT_SERVER")
        return next((s for s in found if s.key == default), found[0])
    chosen = policy(found, counts=tenant_counts(), labels=wanted)
    if not isinstance(chosen, Server) or chosen.key not in {s.key for s in found}:
        raise ImproperlyConfigured(
            f'TENANT_SCHEMA["PLACEMENT"] returned {chosen!r}, not one of the candidate servers it was given'
        )
    return chosen


def _show(labels: Mapping[str, str]) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(labels.items()))
