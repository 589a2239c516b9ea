"""One request routed by TenantMiddleware + TenantRouter vs the same view without them.

Both variants serve the same view body (count a tenant's notes) through
Django's test client on the same tenant database; the plain variant names
the alias itself and has no tenant middleware. Requests alternate in
rounds so both see the same machine state; only the ratio matters.
"""

from __future__ import annotations

import argparse
import sys
import time
import types
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _tenant_setup import setup_django, slug, table


def run(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="bench_routing")
    parser.add_argument("--requests", type=int, default=2000)
    args = parser.parse_args(argv)
    setup_django()
    from django.conf import settings
    from django.http import HttpResponse
    from django.test import Client, override_settings
    from django.urls import path

    from tenant_schema.provisioning import purge_tenant, register_tenant
    from tests.tenantapp.models import Note

    tenant = register_tenant(slug("route"), server="sqlite")
    alias = tenant.database.alias

    def routed(request):
        return HttpResponse(str(Note.objects.count()))

    def plain(request):
        return HttpResponse(str(Note.objects.using(alias).count()))

    urls = types.ModuleType("bench_routing_urls")
    urls.urlpatterns = [path("routed/", routed), path("plain/", plain)]
    base = [m for m in settings.MIDDLEWARE if "TenantMiddleware" not in m]
    header = {"X-Tenant": tenant.slug}
    tenant_settings = {**settings.TENANT_SCHEMA, "RESOLVER": "header"}
    try:
        with override_settings(ROOT_URLCONF=urls, TENANT_SCHEMA=tenant_settings):
            with override_settings(MIDDLEWARE=[*base, "tenant_schema.middleware.TenantMiddleware"]):
                with_mw = Client()
                assert with_mw.get("/routed/", headers=header).content == b"0"
            with override_settings(MIDDLEWARE=base):
                without = Client()
                assert without.get("/plain/").content == b"0"
            timings = {"routed": 0.0, "plain": 0.0}
            rounds, per_round = 20, max(1, args.requests // 20)
            for _ in range(rounds):
                start = time.perf_counter()
                for _ in range(per_round):
                    with_mw.get("/routed/", headers=header)
                timings["routed"] += time.perf_counter() - start
                start = time.perf_counter()
                for _ in range(per_round):
                    without.get("/plain/", headers=header)
                timings["plain"] += time.perf_counter() - start
    finally:
        purge_tenant(tenant)
    n = rounds * per_round
    routed_us, plain_us = timings["routed"] / n * 1e6, timings["plain"] / n * 1e6
    print(f"Routing: mean per request over {n} requests each (µs), SQLite tenant, test client")
    print(
        table(
            ["variant", "µs/request", "ratio"],
            [
                ["middleware + router (header resolver)", f"{routed_us:.0f}", f"{routed_us / plain_us:.2f}x"],
                ["same view, alias named, no tenant middleware", f"{plain_us:.0f}", "1.00x"],
            ],
        )
    )


if __name__ == "__main__":
    run(sys.argv[1:])
